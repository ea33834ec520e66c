"""Speed and peak memory of our MEGA encoder against Hugging Face's `MegaModel` (`make bench`).

One training step (forward + backward of the encoder, in training mode) for both implementations with the same
configuration, at each length with full attention and with chunking. Every (implementation, length, attention)
configuration runs in its own fresh process (`experiments.harness.run_job`), and the two implementations alternate
which goes first from one configuration to the next, so that neither profits from the other's freed pages or from
a quieter moment of the machine.

    python -m experiments.bench_mega                                   # the full table, writes BENCHMARKS.md
    python -m experiments.bench_mega --lengths 512 1024 --repeats 3    # a quick look
    python -m experiments.bench_mega --json bench.json                 # also every raw timing
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from experiments import harness, matmul_floor, publish
from experiments.harness import Job, run_job
from experiments.publish import fmt, fmt_ratio, markdown_table, ratio

# The benchmark's configuration; every option not named here is HF MegaConfig's default (rotary relative bias,
# softmax attention, scalenorm, pre-norm, SiLU, no EMA truncation, and all four dropouts at 0.1).
MODEL_OPTIONS: dict[str, Any] = {
    "vocab_size": 257,  # LRA byte-level vocabulary: keeps the embedding gradient small and equal for both
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "shared_representation_size": 64,  # z
    "intermediate_size": 256,  # v
    "nffn_hidden_size": 256,
    "ema_projection_size": 16,  # EMA ndim
}
IMPLEMENTATIONS = {"ours": "experiments.bench_mega:build_ours", "hf": "experiments.bench_mega:build_hf"}
# Goals: >= 3x HF's speed at L=4096 with chunk 128, >= 2x at L=1024 (full and chunk 128), and peak memory
# <= 0.4x HF's at every configuration.
SPEED_GOALS = {(4096, "chunk"): 3.0, (1024, "full"): 2.0, (1024, "chunk"): 2.0}
MEMORY_GOAL = 0.4
# Goal: our step at most this many times its matmul floor (its matrix products alone, replayed) at 4096 chunk 128
FLOOR_GOALS = {(4096, "chunk"): 1.5}


def model_options(length: int, attention: str, chunk: int, max_length: int) -> dict[str, Any]:
    chunking = attention == "chunk"
    return {
        **MODEL_OPTIONS,
        "use_chunking": chunking,
        "chunk_size": chunk if chunking else -1,
        "max_positions": max(max_length, 2048),  # HF sizes its token-type buffer and biases by this
    }


def _encoder_step(model: torch.nn.Module, options: dict[str, Any], device: torch.device):
    """A step closure: forward the encoder on random tokens (no padding), backward a scalar of its output."""
    model.to(device).train()
    generator = torch.Generator().manual_seed(options["seed"])
    # ids from 2 up: never HF's default pad id 1, so neither implementation sees padding
    ids = torch.randint(
        2, MODEL_OPTIONS["vocab_size"], (options["batch_size"], options["length"]), generator=generator
    )
    ids = ids.to(device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        output = model(ids)
        hidden = getattr(output, "last_hidden_state", output)
        hidden.mean().backward()

    info = {"params": sum(p.numel() for p in model.parameters())}
    if options.get(
        "floor_repeats"
    ):  # before the harness's warm-up and timing: it does not touch their figures
        step()
        calls = matmul_floor.record_matmuls(step)
        info["matmul_floor_s"] = matmul_floor.replay_seconds(calls, options["floor_repeats"], device)
    return step, info


def build_hf(options: dict[str, Any], device: torch.device):
    from transformers import MegaConfig, MegaModel

    return _encoder_step(MegaModel(MegaConfig(**options["model"]), add_pooling_layer=False), options, device)


def build_ours(options: dict[str, Any], device: torch.device):
    import mega

    return _encoder_step(mega.MegaEncoder(mega.MegaConfig(**options["model"])), options, device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--attention", nargs="+", choices=["full", "chunk"], default=["full", "chunk"])
    parser.add_argument("--chunk-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--candidate",
        choices=sorted(IMPLEMENTATIONS),
        default="ours",
        help="implementation compared with HF; 'hf' runs HF against itself (checks the harness: ratios ~1)",
    )
    harness.add_arguments(parser, repeats=5)
    publish.add_arguments(parser)
    args = parser.parse_args(argv)
    args.device = args.device or harness.default_device()
    for length in args.lengths:
        if "chunk" in args.attention and length % args.chunk_size and length > args.chunk_size:
            parser.error(
                f"--lengths {length}: HF's chunking needs a multiple of --chunk-size {args.chunk_size}"
            )
    return args


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Measure every configuration, alternating which implementation runs first; return one row per config."""
    roles = [("candidate", args.candidate), ("hf", "hf")]
    configs = [(length, attention) for length in args.lengths for attention in args.attention]
    rows = []
    for index, (length, attention) in enumerate(configs):
        options = {
            "model": model_options(length, attention, args.chunk_size, max(args.lengths)),
            "batch_size": args.batch_size,
            "length": length,
            "seed": 0,
        }
        row: dict[str, Any] = {"length": length, "attention": attention}
        for role, name in roles if index % 2 == 0 else roles[::-1]:
            # the candidate's process also replays its step's matmuls (the floor)
            job_options = {**options, "floor_repeats": args.repeats} if role == "candidate" else options
            job = Job(
                IMPLEMENTATIONS[name], job_options, args.device, args.threads, args.warmup, args.repeats
            )
            row[role] = result = run_job(job, args.timeout)
            print(
                f"[{index + 1}/{len(configs)}] {name:5s} L={length:<6d} {attention:5s} {_summary(result)}",
                flush=True,
            )
        rows.append(row)
    return rows


def _summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    times = ", ".join(f"{t:.3f}" for t in result["times_s"])
    return (
        f"median {result['median_s']:.3f} s ({times}), peak {result['peak_mib']:.0f} MiB "
        f"[process {result['process_s']:.0f} s]"
    )


def report(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], command: str) -> str:
    """The Markdown block: how it was measured, the ratio table, the goals."""
    label = "ours" if args.candidate == "ours" else "HF (as candidate)"
    headers = [
        "length",
        "attention",
        "HF s/step",
        f"{label} s/step",
        f"speed-up (HF/{label})",
        "HF peak MiB",
        f"{label} peak MiB",
        f"memory ({label}/HF)",
        "matmul floor s",
        f"{label} / floor",
    ]
    table = []
    for row in rows:
        hf, ours = row["hf"], row["candidate"]
        attention = "full" if row["attention"] == "full" else f"chunk {args.chunk_size}"
        table.append(
            [
                row["length"],
                attention,
                fmt(hf.get("median_s")) if "error" not in hf else hf["error"],
                fmt(ours.get("median_s")) if "error" not in ours else ours["error"],
                fmt_ratio(ratio(hf.get("median_s"), ours.get("median_s"))),
                fmt(hf.get("peak_mib"), 4),
                fmt(ours.get("peak_mib"), 4),
                fmt_ratio(ratio(ours.get("peak_mib"), hf.get("peak_mib"))),
                fmt(ours.get("matmul_floor_s")),
                fmt_ratio(ratio(ours.get("median_s"), ours.get("matmul_floor_s"))),
            ]
        )
    lines = [
        *publish.header(command, info, args.threads),
        f"- Batch {args.batch_size}; {args.warmup} warm-up step(s), median of {args.repeats} timed steps; "
        f"parameters: HF {_params(rows, 'hf')}, {label} {_params(rows, 'candidate')}",
        "",
        markdown_table(headers, table),
        "",
        *_goal_lines(rows, args),
    ]
    return "\n".join(lines)


def _params(rows: list[dict[str, Any]], key: str) -> str:
    counts = sorted({row[key]["params"] for row in rows if "params" in row[key]})
    return "/".join(f"{count:,}" for count in counts) or "?"


def _goal_lines(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    lines = []
    for row in rows:
        speed_up = ratio(row["hf"].get("median_s"), row["candidate"].get("median_s"))
        goal = SPEED_GOALS.get((row["length"], row["attention"]))
        if row["attention"] == "chunk" and args.chunk_size != 128:
            goal = None  # the goals are for chunk 128
        if goal is not None and speed_up is not None:
            verdict = "met" if speed_up >= goal else "NOT met"
            lines.append(
                f"- Goal ≥{goal:g}× at {row['length']} {row['attention']}: {speed_up:.2f}× ({verdict})"
            )
        floor = FLOOR_GOALS.get((row["length"], row["attention"])) if args.chunk_size == 128 else None
        over_floor = ratio(row["candidate"].get("median_s"), row["candidate"].get("matmul_floor_s"))
        if floor is not None and over_floor is not None:
            verdict = "met" if over_floor <= floor else "NOT met"
            lines.append(
                f"- Goal step ≤{floor:g}× its matmul floor at {row['length']} {row['attention']}: "
                f"{over_floor:.2f}× ({verdict})"
            )
    memory = [ratio(row["candidate"].get("peak_mib"), row["hf"].get("peak_mib")) for row in rows]
    memory = [value for value in memory if value is not None]
    if memory:
        verdict = "met" if max(memory) <= MEMORY_GOAL else "NOT met"
        lines.append(f"- Goal memory ≤{MEMORY_GOAL:g}× HF everywhere: worst {max(memory):.2f}× ({verdict})")
    return lines


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.bench_mega", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info(args.device)
    print(f"bench_mega on {info['device']} ({info['cpu']}), torch {info['torch']}: {command}", flush=True)
    rows = run(args)
    text = report(rows, args, info, command)
    publish.write("bench_mega", text, args, {"machine": info, "command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
