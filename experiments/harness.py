"""The one timing harness of experiments/: warm-up, repeats, median, CPU time, peak memory, fresh processes.

Every benchmark times its steps with these functions (output goes through `experiments.publish`):

- `time_steps(step, warmup=1, repeats=3, device="cpu", memory=False) -> dict`: call `step()` `warmup` times
  untimed, then `repeats` times timed, in this process. The dict has `times_s` and `cpu_times_s` (one per timed
  step; CPU time of this process, all its threads), `median_s`, `median_cpu_s`, and with `memory=True`
  `peak_mib` / `base_mib` (below). On CUDA every step ends with `torch.cuda.synchronize()`.
- `alternate(steps, warmup=1, repeats=3, device="cpu") -> {name: dict}`: several steps in one process taking turns
  within each round (the first `warmup` rounds untimed), so that a busy or quiet moment of a shared machine hits
  all of them alike; the same dict per name, without memory (one process cannot tell their peaks apart).
- `Job(builder, options, device, threads, warmup, repeats, seed)` and `run_job(job, timeout_s) -> dict`: the
  measurement of `time_steps(..., memory=True)` in a fresh interpreter (`python -m experiments.harness '<job>'`),
  so that no allocator state, cached pages or thread pools leak from one configuration into the next. The builder
  is a "package.module:function" taking `(options, device)` and returning `(step, info)`; `info` (e.g. the
  parameter count) is merged into the result, which also has `threads` and `process_s` (the process's whole wall
  time). A step that cannot be measured gives `{"error": "out of memory" | "killed by signal 9" | "timeout ..."}`.
- `add_arguments(parser, repeats=3, threads=2, per_process=True)`: the shared command-line options (--repeats,
  --warmup, --threads; with `per_process` also --device and --timeout); `default_device()`.

Memory is the peak during the timed steps above the level after the warm-up, i.e. what one step needs on top of
the model, optimizer state and inputs:
- CPU: the resident-set high-water mark (`VmHWM` in /proc/self/status) minus `VmRSS`, both taken after the warm-up.
  Before reading the base, freed heap pages are handed back to the kernel (glibc `malloc_trim(0)`), so pages the
  warm-up step freed but the allocator kept cannot hide the timed steps' allocations; the high-water mark is then
  reset to the current RSS by writing 5 to /proc/self/clear_refs (Linux >= 4.0). Warming up first keeps one-off
  costs (library code paged in on first use, thread pools) out of the figure. Only a fresh process (`run_job`)
  gives a peak that belongs to one configuration alone.
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus `memory_allocated()`.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "HARNESS-RESULT "
MIB = 2**20

# A builder: (options, device) -> (step, info); `step()` runs one step, `info` is JSON metadata (e.g. parameters).
Builder = Callable[[dict[str, Any], Any], tuple[Callable[[], None], dict[str, Any]]]


def _check_counts(warmup: int, repeats: int) -> None:
    if warmup < 1 or repeats < 1:
        raise ValueError(
            f"warmup={warmup}, repeats={repeats}: both must be >= 1 (the warm-up step keeps one-off costs such as "
            "library code paged in on first use out of the time and memory figures)"
        )


def _synchronizer(device: Any) -> Callable[[], None]:
    import torch

    device = torch.device(device)
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def _timings(times: list[float], cpu_times: list[float]) -> dict[str, Any]:
    return {
        "times_s": times,
        "cpu_times_s": cpu_times,  # all threads' CPU time: on a busy machine, compare it with the wall time
        "median_s": statistics.median(times),
        "median_cpu_s": statistics.median(cpu_times),
    }


def time_steps(
    step: Callable[[], Any], warmup: int = 1, repeats: int = 3, device: Any = "cpu", memory: bool = False
) -> dict[str, Any]:
    """Warm up, then time `repeats` calls of `step` (wall and CPU clock); see the module docstring."""
    _check_counts(warmup, repeats)
    sync = _synchronizer(device)
    for _ in range(warmup):
        step()
    sync()
    peak = PeakMemory(device) if memory else None
    if peak is not None:
        gc.collect()
        peak.reset()
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    result = _timings(times, cpu_times)
    if peak is not None:
        result.update(
            peak_mib=peak.peak_above_base() / MIB, base_mib=peak.base / MIB, hwm_reset=peak.hwm_reset
        )
    return result


def alternate(
    steps: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 3, device: Any = "cpu"
) -> dict[str, dict[str, Any]]:
    """Time several steps in one process, each once per round in turn; see the module docstring."""
    _check_counts(warmup, repeats)
    sync = _synchronizer(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu_times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(warmup + repeats):
        for name, step in steps.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            sync()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(time.process_time() - cpu_start)
    return {name: _timings(times[name], cpu_times[name]) for name in steps}


@dataclasses.dataclass
class Job:
    """One configuration measured in one process: `warmup` untimed steps, then `repeats` timed ones."""

    builder: str  # "package.module:function"
    options: dict[str, Any]
    device: str = "cpu"
    threads: int = 2
    warmup: int = 1
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_counts(self.warmup, self.repeats)


def run_job(job: Job, timeout_s: float | None = None) -> dict[str, Any]:
    """Run `job` in a fresh interpreter and return its result dict (see the module docstring)."""
    threads = str(job.threads)
    # thread pools are sized at import time, so the environment must say it too
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "experiments.harness", json.dumps(dataclasses.asdict(job))]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {**json.loads(line[len(RESULT_PREFIX) :]), "process_s": time.perf_counter() - start}
    if proc.returncode < 0:  # the kernel's OOM killer sends SIGKILL
        return {"error": f"killed by signal {-proc.returncode}"}
    raise RuntimeError(
        f"measurement process failed (exit {proc.returncode}) for {job.builder} {job.options}:\n"
        f"{proc.stderr[-4000:]}"
    )


def measure(job: Job) -> dict[str, Any]:
    """Build the job's step in this process and time it with memory (what `run_job`'s child process runs).

    Uses the process's current thread count: the child sets it to `job.threads`.
    """
    import torch

    torch.manual_seed(job.seed)
    device = torch.device(job.device)
    module_name, function_name = job.builder.split(":")
    builder: Builder = getattr(importlib.import_module(module_name), function_name)
    step, info = builder(job.options, device)
    try:
        timings = time_steps(step, job.warmup, job.repeats, device, memory=True)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        return {**info, "error": "out of memory"}
    return {**info, **timings, "threads": torch.get_num_threads()}


def add_arguments(
    parser: argparse.ArgumentParser, repeats: int = 3, threads: int = 2, per_process: bool = True
) -> None:
    """The harness's command-line options; `per_process` adds --device and --timeout (for `run_job` users)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (at least 1)")
    parser.add_argument("--threads", type=int, default=threads, help="CPU threads per process")
    if per_process:
        parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
        parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per configuration")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class PeakMemory:
    """Peak memory above the level at `reset()`: RSS high-water mark on CPU, allocator peak on CUDA."""

    def __init__(self, device: Any) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.base = 0
        self.hwm_reset = True

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        _release_free_heap()
        try:  # "5" resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.hwm_reset = False  # the peak then also covers start-up, so it is an upper bound
        self.base = _proc_status_bytes("VmRSS")

    def peak_above_base(self) -> int:
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return _proc_status_bytes("VmHWM") - self.base


def _release_free_heap() -> None:
    """Return the allocator's free pages to the kernel (glibc only; elsewhere a no-op)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}: peak CPU memory needs Linux")


def _is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


def main() -> None:
    import torch

    job = Job(**json.loads(sys.argv[1]))
    torch.set_num_threads(job.threads)
    print(RESULT_PREFIX + json.dumps(measure(job)), flush=True)


if __name__ == "__main__":
    main()
