"""Timing and peak memory of one training step, each configuration in its own fresh process.

Shared by `experiments.bench_mega` and `experiments.efficiency`. A benchmark describes a configuration as a `Job`
(a builder function named as "module:function" plus JSON options); `run_job` runs it in a new Python process
(`python -m experiments.measure '<job json>'`) so that no allocator state, cached pages or thread pools leak from
one model into the next. The builder returns a zero-argument `step` callable that does one full step.

Memory is the peak during the timed steps above the process's level after the warm-up steps, i.e. what one step
needs on top of the model, optimizer state and inputs:
- CPU: the resident-set high-water mark (`VmHWM` in /proc/self/status) minus `VmRSS`, both taken after the warm-up.
  Before reading the base, freed heap pages are handed back to the kernel (glibc `malloc_trim(0)`), so pages the
  warm-up step freed but the allocator kept cannot hide the timed steps' allocations; the high-water mark is then
  reset to the current RSS by writing 5 to /proc/self/clear_refs (Linux >= 4.0). Warming up first keeps one-off
  costs (library code paged in on first use, thread pools) out of the figure.
- CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus `memory_allocated()`.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import importlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "MEASURE-RESULT "
MIB = 2**20

# A builder: (options, device) -> (step, info); `step()` runs one step, `info` is JSON metadata (e.g. parameters).
Builder = Callable[[dict[str, Any], Any], tuple[Callable[[], None], dict[str, Any]]]


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
        if self.warmup < 1 or self.repeats < 1:
            raise ValueError(
                f"warmup={self.warmup}, repeats={self.repeats}: both must be >= 1 (the warm-up step keeps one-off "
                "costs such as library code paged in on first use out of the time and memory figures)"
            )


# ---------------------------------------------------------------- parent side


def run_job(job: Job, timeout_s: float | None = None) -> dict[str, Any]:
    """Run `job` in a fresh interpreter and return its result dict.

    The result has `times_s` and `cpu_times_s` (one per timed step), `median_s`, `peak_mib`, `base_mib`,
    `process_s` (the whole process's wall time, start-up included) and the builder's info, or `error` (e.g.
    "out of memory", "killed by signal 9", "timeout") when the step could not be measured.
    """
    threads = str(job.threads)
    # thread pools are sized at import time, so the environment must say it too
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "experiments.measure", json.dumps(dataclasses.asdict(job))]
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


def add_common_arguments(parser: argparse.ArgumentParser, default_repeats: int = 3) -> None:
    """The options every benchmark script shares: step counts, threads, device, timeout and outputs."""
    parser.add_argument("--repeats", type=int, default=default_repeats, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (at least 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per configuration")
    parser.add_argument(
        "--markdown", type=Path, default=REPO_ROOT / "BENCHMARKS.md", help="file to write into"
    )
    parser.add_argument("--no-markdown", action="store_true", help="only print the tables")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw result here")


def publish(name: str, text: str, args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Print the Markdown block, put it into the `name` section of --markdown, dump `payload` to --json."""
    print("\n" + text)
    if not args.no_markdown:
        write_section(args.markdown, name, text)
        print(f"\nwrote {args.markdown}")
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")


def machine_info(device: str) -> dict[str, Any]:
    """What the figures depend on: host, CPU or GPU model, core count, library versions, commit, date."""
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "commit": _git_commit(),
        "load_start": os.getloadavg()[0],
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def load_line(info: dict[str, Any]) -> str:
    """The machine's 1-minute load average at the start and end of the run: above the core count, timings suffer."""
    end = os.getloadavg()[0]
    busy = max(info["load_start"], end) > 0.5 + (info["cpu_count"] or 1)
    warning = " (busier than its cores: timings are noisy)" if busy else ""
    return f"- Load average at start / end: {info['load_start']:.1f} / {end:.1f} on {info['cpu_count']} cores{warning}"


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure for a table cell; '–' where there is none (failed run, missing baseline)."""
    return "–" if value is None else f"{value:.{digits}g}"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}×"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between `<!-- name:start -->` and `<!-- name:end -->` in `path` (append if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def command_line(module: str, argv: list[str]) -> str:
    """How a script was invoked, as a user would retype it."""
    return " ".join([f"python -m {module}", *argv])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ---------------------------------------------------------------- child side


class PeakMemory:
    """Peak memory above the level at `reset()`: RSS high-water mark on CPU, allocator peak on CUDA."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
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
    text = str(error)
    return "out of memory" in text.lower() or "can't allocate memory" in text.lower()


def measure(job: Job) -> dict[str, Any]:
    """Build the job's step in this process, warm up, time `repeats` steps and read the peak memory.

    Uses the process's current thread count: `main` (the child process) sets it to `job.threads`.
    """
    import gc

    import torch

    torch.manual_seed(job.seed)
    device = torch.device(job.device)
    module_name, function_name = job.builder.split(":")
    builder: Builder = getattr(importlib.import_module(module_name), function_name)
    step, info = builder(job.options, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    memory = PeakMemory(device)
    times, cpu_times = [], []
    try:
        for index in range(job.warmup + job.repeats):
            if index == job.warmup:
                gc.collect()
                memory.reset()
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            sync()
            if index >= job.warmup:
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as error:
        if not _is_out_of_memory(error):
            raise
        return {**info, "error": "out of memory"}
    peak = memory.peak_above_base()
    return {
        **info,
        "times_s": times,
        "cpu_times_s": cpu_times,  # all threads' CPU time: on a busy machine, compare it with the wall time
        "median_s": statistics.median(times) if times else None,
        "peak_mib": peak / MIB,
        "base_mib": memory.base / MIB,
        "hwm_reset": memory.hwm_reset,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    import torch

    job = Job(**json.loads(sys.argv[1]))
    torch.set_num_threads(job.threads)
    result = measure(job)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
