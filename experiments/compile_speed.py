"""`torch.compile` against eager: training-step time, peak memory and compile time of the Text classifiers.

Each (model, eager or compiled) runs in its own fresh process (`experiments/harness.py`): one AdamW training step
of the Text recipe's classifier on random byte tokens (`experiments.efficiency`'s step), the compiled one with
`nn.Module.compile()` as `module.compile=true` does. The first compiled step (Dynamo capture, AOT autograd and
inductor's code generation, from an empty inductor cache) is timed on its own as the compile time; the warm-up
step and the timed steps come after it.

    python -m experiments.compile_speed                                # MEGA and Mega-chunk, L = 1024, batch 2
    python -m experiments.compile_speed --models MEGA --lengths 512 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import torch

from experiments import efficiency, harness, publish
from experiments.harness import Job, run_job
from experiments.publish import fmt, fmt_ratio, markdown_table, ratio


def build_step(options: dict[str, Any], device: torch.device):
    """efficiency.build_classifier's step; when compiled, the first call (the compile) is timed here."""
    if options["compile"]:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    step, info = efficiency.build_classifier(options, device)
    if options["compile"]:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        info["compile_s"] = time.perf_counter() - start
    return step, info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=efficiency.MODELS, default=["MEGA", "Mega-chunk"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024])
    parser.add_argument("--batch-size", type=int, default=2)
    harness.add_arguments(parser)
    publish.add_arguments(parser)
    args = parser.parse_args(argv)
    args.device = args.device or harness.default_device()
    return args


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (model, length, eager/compiled); eager and compiled alternate which goes first."""
    rows = []
    for index, (model, length) in enumerate((m, n) for m in args.models for n in args.lengths):
        for compiled in (False, True) if index % 2 == 0 else (True, False):
            options = {
                "model": model,
                "net": efficiency.net_options(model, length),
                "batch_size": args.batch_size,
                "length": length,
                "seed": 0,
                "compile": compiled,
            }
            builder = "experiments.compile_speed:build_step"
            job = Job(builder, options, args.device, args.threads, args.warmup, args.repeats)
            result = run_job(job, args.timeout)
            rows.append({"model": model, "length": length, "compiled": compiled, **result})
            outcome = result.get("error") or "{:.3g} s/step".format(result["median_s"])
            print(f"{model} L={length} {'compiled' if compiled else 'eager'}: {outcome}", flush=True)
    return rows


def report(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], command: str) -> str:
    table = []
    for model in args.models:
        for length in args.lengths:
            eager, compiled = (
                next(r for r in rows if r["model"] == model and r["length"] == length and r["compiled"] == c)
                for c in (False, True)
            )
            table.append(
                [
                    model,
                    length,
                    eager.get("error") or fmt(eager.get("median_s")),
                    compiled.get("error") or fmt(compiled.get("median_s")),
                    fmt_ratio(ratio(eager.get("median_s"), compiled.get("median_s"))),
                    fmt(eager.get("peak_mib"), 4),
                    fmt(compiled.get("peak_mib"), 4),
                    fmt_ratio(ratio(compiled.get("peak_mib"), eager.get("peak_mib"))),
                    fmt(compiled.get("compile_s")),
                ]
            )
    return "\n".join(
        [
            *publish.header(command, info, args.threads),
            f"- Batch {args.batch_size}; Text recipe classifiers in training mode; compile = first step from an "
            f"empty inductor cache; then {args.warmup} warm-up step(s), median of {args.repeats} timed steps",
            "",
            markdown_table(
                [
                    "model",
                    "length",
                    "eager s/step",
                    "compiled s/step",
                    "speed-up",
                    "eager peak MiB",
                    "compiled peak MiB",
                    "memory (compiled/eager)",
                    "compile s",
                ],
                table,
            ),
        ]
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.compile_speed", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info(args.device)
    print(f"compile_speed on {info['device']} ({info.get('gpu') or info['cpu']}): {command}", flush=True)
    rows = run(args)
    publish.write(
        "compile_speed",
        report(rows, args, info, command),
        args,
        {"machine": info, "command": command, "rows": rows},
    )
    return rows


if __name__ == "__main__":
    main()
