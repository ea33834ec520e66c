"""Activation checkpointing on Path-X: peak memory and step time with `model.activation_checkpointing` off and on,
and from them an estimate of the Path-X recipe's memory on one GPU.

One training step = forward of the MEGA classifier of the Path-X recipe (conf/arch/mega/lra_pathx.yaml: 4 layers,
d = 64, BatchNorm, laplace attention, no dropout) with the attention chunk of `--chunk-sizes` (-1: the recipe's
full attention), on random pixels in [-1, 1] without padding, cross-entropy, backward, AdamW update; fp32, or bf16
CPU autocast as `trainer.precision=bf16-mixed`. Each (chunk, length, batch, precision, checkpointing) runs in its
own fresh process (`experiments.harness.run_job`); memory is the step's peak above the model and optimizer state.
The first chunk runs at every length and batch (two batches give memory as a + b·batch), the other chunks at the
first length and batch only: what they need beyond the first chunk is the attention's, scaled to the longest length
(see `estimate_mib`). The estimate for the recipe's batch per device is printed last.

    python -m experiments.checkpointing              # the BENCHMARKS.md section (CPU, about 35 min on 2 cores)
    python -m experiments.checkpointing --lengths 1024 --batch-sizes 1 --precisions fp32 --repeats 1 --no-markdown
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from experiments import harness, publish
from experiments.harness import MIB, REPO_ROOT, Job, run_job
from experiments.publish import fmt, fmt_ratio, markdown_table, ratio

GPUS_GIB = (40, 80)  # one A100 40 GB, one A100/H100 80 GB
USABLE = 0.9  # share of a GPU's memory counted as usable (CUDA context, allocator fragmentation, workspaces)
PRECISIONS = ("fp32", "bf16")


def recipe() -> dict[str, Any]:
    """The Path-X recipe: MEGA's options (conf/arch/mega/lra_pathx.yaml with the data facts of conf/data/pathx.yaml)
    and the batch per device of conf/experiment/lra_pathx.yaml."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
        net = OmegaConf.to_container(compose(config_name="arch/mega/lra_pathx").arch.mega, resolve=True)
        data = compose(config_name="data/pathx").data
    experiment = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / "lra_pathx.yaml")
    net.update(
        vocab_size=data.vocab_size,
        pad_token_id=data.pad_id,
        num_labels=data.num_classes,
        input_kind=data.input_kind,
    )
    return {
        "net": net,
        "batch_size": experiment.data.batch_size,
        "accumulate": experiment.trainer.accumulate_grad_batches,
    }


def build_step(options: dict[str, Any], device: torch.device):
    """A step closure: one AdamW training step of the Path-X classifier on random pixels and labels."""
    import mega

    net = mega.MegaForSequenceClassification(**options["net"]).to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(options["seed"])
    shape = (options["batch_size"], options["length"])
    pixels = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    labels = torch.randint(0, options["net"]["num_labels"], shape[:1], generator=generator).to(device)
    bf16 = options["precision"] == "bf16"

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            logits = net(pixels)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()

    params = sum(p.numel() for p in net.parameters())
    return step, {"params": params}


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The first chunk at every length and batch; the other chunks at the first length and batch."""
    main, *others = args.chunk_sizes
    points = [(main, length, batch) for length in args.lengths for batch in args.batch_sizes]
    points += [(chunk, args.lengths[0], args.batch_sizes[0]) for chunk in others]
    return [
        {"chunk": c, "length": n, "batch": b, "precision": p, "checkpointing": on}
        for c, n, b in points
        for p in args.precisions
        for on in (False, True)
    ]


def run(args: argparse.Namespace, base: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    todo = configurations(args)
    for index, row in enumerate(todo):
        net = dict(
            base["net"],
            chunk_size=row["chunk"],
            max_positions=max(base["net"]["max_positions"], row["length"]),
            activation_checkpointing=row["checkpointing"],
        )
        options = {"net": net, "batch_size": row["batch"], "length": row["length"]}
        options.update(precision=row["precision"], seed=0)
        job = Job("experiments.checkpointing:build_step", options, args.device, args.threads)
        job.warmup, job.repeats = args.warmup, args.repeats
        result = run_job(job, args.timeout)
        rows.append({**row, **result})
        done = (
            f"[{index + 1}/{len(todo)}] chunk {row['chunk']} L={row['length']} B={row['batch']} "
            f"{row['precision']} checkpointing {'on ' if row['checkpointing'] else 'off'}"
        )
        if "error" in result:
            print(f"{done}: {result['error']}", flush=True)
        else:
            print(
                f"{done}: {result['median_s']:.2f} s/step, peak {result['peak_mib']:.0f} MiB "
                f"[process {result['process_s']:.0f} s]",
                flush=True,
            )
    return rows


def _find(rows: list[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    return next((r for r in rows if all(r[k] == v for k, v in keys.items()) and "error" not in r), {})


def state_mib(params: int) -> float:
    """Weights, gradients and AdamW's two moments, fp32 (bf16-mixed keeps fp32 weights too)."""
    return 4 * 4 * params / MIB


def keys_seen(chunk: int, length: int) -> int:
    """Keys each query attends to: the chunk, or the whole sequence (full attention, or a shorter sequence)."""
    return length if chunk < 0 else min(chunk, length)


def estimate_mib(
    rows: list[dict[str, Any]], args: argparse.Namespace, batch: int, **keys: Any
) -> float | None:
    """Peak at `batch` samples and the longest length: the first chunk's two smallest batches give a + b·B.

    Another chunk was measured at the first length L₀ only: what it needs on top of the first chunk there is the
    attention's, which grows with L·C: it is added × (L/L₀)·(C_L/C_L₀) per sample (full attention: C = L)."""
    longest, first = args.lengths[-1], args.lengths[0]
    main = args.chunk_sizes[0]
    chunk = keys.pop("chunk", main)
    one = _find(rows, chunk=main, length=longest, batch=args.batch_sizes[0], **keys)
    two = _find(rows, chunk=main, length=longest, batch=args.batch_sizes[-1], **keys)
    if not one or not two or args.batch_sizes[0] == args.batch_sizes[-1]:
        return None
    slope = (two["peak_mib"] - one["peak_mib"]) / (args.batch_sizes[-1] - args.batch_sizes[0])
    total = one["peak_mib"] + slope * (batch - args.batch_sizes[0])
    params = one["params"]
    if chunk != main:
        mine = _find(rows, chunk=chunk, length=first, batch=args.batch_sizes[0], **keys)
        theirs = _find(rows, chunk=main, length=first, batch=args.batch_sizes[0], **keys)
        if not mine or not theirs:
            return None
        growth = (longest / first) * keys_seen(chunk, longest) / keys_seen(chunk, first)
        extra = (mine["peak_mib"] - theirs["peak_mib"]) / args.batch_sizes[0]
        total += extra * growth * batch
        params = mine["params"]  # its relative bias spans its chunk
    return total + state_mib(params)


def estimate_rows(rows: list[dict[str, Any]], args: argparse.Namespace, batch: int) -> list[list[Any]]:
    out = []
    for chunk in args.chunk_sizes:
        for precision in args.precisions:
            for checkpointing in (False, True):
                mib = estimate_mib(
                    rows, args, batch, chunk=chunk, precision=precision, checkpointing=checkpointing
                )
                if mib is None:
                    continue
                gib = mib / 1024
                out.append(
                    [
                        "full" if chunk < 0 else chunk,
                        precision,
                        "on" if checkpointing else "off",
                        f"{gib:.1f}",
                        *("yes" if gib <= USABLE * size else "no" for size in GPUS_GIB),
                    ]
                )
    return out


def report(
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
    info: dict[str, Any],
    command: str,
    base: dict[str, Any],
) -> str:
    measured = []
    for row in rows:
        plain = _find(
            rows, **{k: row[k] for k in ("chunk", "length", "batch", "precision")}, checkpointing=False
        )
        on = row["checkpointing"]
        measured.append(
            [
                "full" if row["chunk"] < 0 else row["chunk"],
                row["length"],
                row["batch"],
                row["precision"],
                "on" if on else "off",
                row.get("error") or fmt(row.get("median_s")),
                fmt(row.get("peak_mib"), 4),
                fmt_ratio(ratio(row.get("median_s"), plain.get("median_s"))) if on else "",
                fmt_ratio(ratio(row.get("peak_mib"), plain.get("peak_mib"))) if on else "",
            ]
        )
    linear = []
    small, large = args.batch_sizes[0], args.batch_sizes[-1]
    for length in args.lengths:
        for precision in args.precisions:
            for checkpointing in (False, True):
                keys = dict(chunk=args.chunk_sizes[0], length=length, precision=precision)
                one = _find(rows, **keys, batch=small, checkpointing=checkpointing)
                other = _find(rows, **keys, batch=large, checkpointing=checkpointing)
                if one and other and large != small:
                    slope = (other["peak_mib"] - one["peak_mib"]) / (large - small)
                    linear.append(
                        [
                            length,
                            precision,
                            "on" if checkpointing else "off",
                            fmt_ratio(ratio(other["peak_mib"], one["peak_mib"])),
                            fmt(slope, 4),
                            fmt(one["peak_mib"] - slope * small, 4),
                        ]
                    )
    batch = base["batch_size"]
    params = next((r["params"] for r in rows if "params" in r), 0)
    lines = [
        *publish.header(command, info, args.threads),
        f"- Model: conf/arch/mega/lra_pathx.yaml ({params:,} parameters) with the chunk in the first column; "
        f"random pixels, no padding; one step = forward, cross-entropy, backward, AdamW update; {args.warmup} "
        f"warm-up step(s), median of {args.repeats} timed steps; peak = RSS high-water mark above the level after "
        "the warm-up (the weights, gradients and optimizer state are below it)",
        "",
        markdown_table(
            [
                "chunk",
                "length",
                "batch",
                "precision",
                "checkpointing",
                "s/step",
                "peak MiB",
                "time (×off)",
                "memory (×off)",
            ],
            measured,
        ),
        "",
        f"Memory against the batch (chunk {args.chunk_sizes[0]}): peak(B) = a + b·B through batches {small} and "
        f"{large}; b is what a sample needs, a what does not grow with the batch (the EMA kernels, "
        "buffers the allocator keeps):",
        "",
        markdown_table(
            [
                "length",
                "precision",
                "checkpointing",
                f"peak ×(batch {large} / {small})",
                "b MiB/sample",
                "a MiB",
            ],
            linear,
        ),
        "",
        f"**Estimate** for the Path-X recipe (conf/experiment/lra_pathx.yaml) on one GPU: batch {batch} per "
        f"device (× {base['accumulate']} accumulated), length {args.lengths[-1]}. From the CPU peaks above, linear in "
        f"the batch: peak(B) = peak({args.batch_sizes[0]}) + (B − {args.batch_sizes[0]}) × the growth per sample "
        f"between batches {args.batch_sizes[0]} and {args.batch_sizes[-1]} (chunk {args.chunk_sizes[0]}); another "
        f"chunk adds what it needed above chunk {args.chunk_sizes[0]} at length {args.lengths[0]}, × (L/L₀)·(keys "
        f"per query at L / at L₀) per sample; plus {state_mib(params):.1f} MiB of weights, gradients and AdamW "
        f"moments. 'Fits' = at most {USABLE:.0%} of the GPU's memory (the rest for the CUDA context, allocator "
        "fragmentation, kernel workspaces). An estimate from CPU tensors, not a GPU measurement: GPU kernels (cuFFT "
        "plans, matmul workspaces) and the caching allocator add to it; bf16 is CPU autocast's.",
        "",
        markdown_table(
            [
                "chunk",
                "precision",
                "checkpointing",
                f"GiB at batch {batch}",
                *(f"fits {gib} GB" for gib in GPUS_GIB),
            ],
            estimate_rows(rows, args, batch),
        ),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument(
        "--chunk-sizes",
        type=int,
        nargs="+",
        default=[128, -1, 4096],
        help="-1: full attention (the Path-X recipe's; 4096: lra_pathx_chunk's)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="the first at every length, the rest at the first",
    )
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    harness.add_arguments(parser, repeats=2)
    publish.add_arguments(parser)
    args = parser.parse_args(argv)
    args.device = args.device or "cpu"
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.checkpointing", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info(args.device)
    print(
        f"checkpointing on {info['device']} ({info.get('gpu') or info['cpu']}), torch {info['torch']}: {command}"
    )
    base = recipe()
    rows = run(args, base)
    text = report(rows, args, info, command, base)
    publish.write("checkpointing", text, args, {"machine": info, "command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
