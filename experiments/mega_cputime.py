"""CPU time of one training step, ours vs HF's MegaModel, taking turns in one process (for loaded machines).

Wall-clock timings on a shared, oversubscribed machine mostly measure waiting; process CPU time at one thread
measures the work. This complements `make bench` (wall clock, separate processes, peak memory); the step and the
configuration are bench_mega's, timed with `experiments.harness.alternate`:

    python -m experiments.mega_cputime --length 1024 --chunk 128 --batch-size 8 --repeats 2
    python -m experiments.mega_cputime --length 4096 --json cputime.json --markdown BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from experiments import bench_mega, harness, publish
from experiments.publish import fmt, fmt_ratio, markdown_table, ratio


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=128, help="-1: full attention")
    parser.add_argument("--batch-size", type=int, default=8)
    harness.add_arguments(parser, repeats=2, threads=1, per_process=False)
    publish.add_arguments(parser, markdown=None)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Both implementations' steps on the same tokens, alternating; {"hf": timings, "ours": timings}."""
    torch.set_num_threads(args.threads)
    attention = "chunk" if args.chunk > 0 else "full"
    options = {
        "model": bench_mega.model_options(args.length, attention, args.chunk, args.length),
        "batch_size": args.batch_size,
        "length": args.length,
        "seed": 0,
    }
    device = torch.device("cpu")
    steps, params = {}, {}
    for name in ("hf", "ours"):
        builder = bench_mega.build_hf if name == "hf" else bench_mega.build_ours
        steps[name], info = builder(options, device)
        params[name] = info["params"]
    results = harness.alternate(steps, args.warmup, args.repeats)
    return {name: {**timings, "params": params[name]} for name, timings in results.items()}


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], command: str
) -> str:
    hf, ours = results["hf"], results["ours"]
    attention = f"chunk {args.chunk}" if args.chunk > 0 else "full"
    row = [
        args.length,
        attention,
        fmt(hf["median_cpu_s"]),
        fmt(ours["median_cpu_s"]),
        fmt_ratio(ratio(hf["median_cpu_s"], ours["median_cpu_s"])),
        fmt(hf["median_s"]),
        fmt(ours["median_s"]),
    ]
    headers = [
        "length",
        "attention",
        "HF CPU s/step",
        "ours CPU s/step",
        "speed-up (CPU)",
        "HF wall s",
        "ours wall s",
    ]
    return "\n".join(
        [
            *publish.header(command, info, args.threads),
            f"- Batch {args.batch_size}; bench_mega's configuration, both in one process taking turns; "
            f"{args.warmup} warm-up round(s), median of {args.repeats}",
            "",
            markdown_table(headers, [row]),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.mega_cputime", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info("cpu")
    results = run(args)
    publish.write(
        "mega_cputime",
        report(results, args, info, command),
        args,
        {"machine": info, "command": command, **results},
    )
    return results


if __name__ == "__main__":
    main()
