"""The paper's efficiency comparison: training speed and peak memory of Transformer, MEGA, Mega-chunk, Megalodon
and Megalodon-chunk on Text.

One training step = forward of the classifier on a batch of random byte tokens, cross-entropy, backward and an AdamW
update, in training mode with each recipe's dropout. Every (model, length) runs in its own fresh process
(`experiments.harness.run_job`), on the current device (CUDA when available, else CPU). Writes a Markdown table into
BENCHMARKS.md (the paper's Table 2 "Speed"/"Mem" columns: Text at 4K, relative to the Transformer) and a PNG plot of
step time and memory against the sequence length.

    python -m experiments.efficiency                                   # CPU: 1K-4K, GPU: 1K-16K
    python -m experiments.efficiency --lengths 1024 2048 --repeats 2   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from experiments import harness, paper, publish
from experiments.harness import REPO_ROOT, Job, run_job
from experiments.publish import fmt, fmt_ratio, markdown_table, ratio

# model -> (conf/arch/<family>/<recipe>.yaml, the paper's name): MEGA's App. D Text recipe, its chunk-128 variant,
# the LRA baseline, and Megalodon's Text recipes (Megalodon App. C, c = 128)
RECIPES = {
    "Transformer": ("transformer", "lra_text", "Transformer"),
    "MEGA": ("mega", "lra_text", "MEGA"),
    "Mega-chunk": ("mega", "lra_text_chunk", "MEGA-chunk"),
    "Megalodon": ("megalodon", "lra_text", "Megalodon"),
    "Megalodon-chunk": ("megalodon", "lra_text_chunk", "Megalodon-chunk"),
}
MODELS = tuple(RECIPES)
CLASSIFIERS = {
    "transformer": "TransformerForSequenceClassification",
    "mega": "MegaForSequenceClassification",
    "megalodon": "MegalodonForSequenceClassification",
}
LR, WEIGHT_DECAY = 0.004, 0.01  # Text recipe; only the update's cost matters here


def net_options(model: str, length: int) -> dict[str, Any]:
    """The model's Text recipe (composed by Hydra from conf/arch, data facts from conf/data/text.yaml), with room
    for `length` positions."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    family, recipe, _ = RECIPES[model]
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base=None):
        composed = compose(config_name=f"arch/{family}/{recipe}")
    options = OmegaConf.to_container(composed.arch[family], resolve=True)
    data = OmegaConf.load(REPO_ROOT / "conf" / "data" / "text.yaml")  # the Text data's static facts
    options.update(vocab_size=data.vocab_size, pad_token_id=data.pad_id, num_labels=data.num_classes)
    # the recipes size positions for L = 4000; longer inputs need a longer table or simple bias
    options["max_positions"] = max(options.get("max_positions", 0), length)
    return options


def build_classifier(options: dict[str, Any], device: torch.device):
    """A step closure: one AdamW training step of the Text classifier on random tokens and labels."""
    import mega

    net = getattr(mega, CLASSIFIERS[RECIPES[options["model"]][0]])(**options["net"])
    net.to(device).train()
    if options.get("compile"):
        net.compile()  # as module.compile=true (experiments.compile_speed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(options["seed"])
    shape = (options["batch_size"], options["length"])
    # ids from 1 up: no padding (0 is pad)
    tokens = torch.randint(1, options["net"]["vocab_size"], shape, generator=generator).to(device)
    labels = torch.randint(0, options["net"]["num_labels"], shape[:1], generator=generator).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(tokens), labels)
        loss.backward()
        optimizer.step()

    return step, {"params": sum(p.numel() for p in net.parameters())}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=None, help="default: 1K-4K on CPU, 1K-16K on GPU"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 25 on GPU (Text recipe), 2 on CPU"
    )
    parser.add_argument("--reference-length", type=int, default=4096, help="length of the paper-style table")
    parser.add_argument(
        "--plot", type=Path, default=REPO_ROOT / "docs" / "efficiency.png", help="PNG to write"
    )
    harness.add_arguments(parser)
    publish.add_arguments(parser)
    args = parser.parse_args(argv)
    args.device = args.device or harness.default_device()
    gpu = args.device.startswith("cuda")
    args.lengths = args.lengths or ([1024, 2048, 4096, 8192, 16384] if gpu else [1024, 2048, 4096])
    args.batch_size = args.batch_size or (25 if gpu else 2)
    return args


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (length, model); the model order rotates from one length to the next."""
    rows = []
    total = len(args.lengths) * len(args.models)
    for index, length in enumerate(args.lengths):
        shift = index % len(args.models)
        for model in args.models[shift:] + args.models[:shift]:
            options = {
                "model": model,
                "net": net_options(model, length),
                "batch_size": args.batch_size,
                "length": length,
                "seed": 0,
            }
            builder = "experiments.efficiency:build_classifier"
            job = Job(builder, options, args.device, args.threads, args.warmup, args.repeats)
            result = run_job(job, args.timeout)
            rows.append({"model": model, "length": length, **result})
            done = f"[{len(rows)}/{total}] {model:11s} L={length:<6d}"
            if "error" in result:
                print(f"{done} {result['error']}", flush=True)
            else:
                print(
                    f"{done} {result['median_s']:.3f} s/step, peak {result['peak_mib']:.0f} MiB "
                    f"[process {result['process_s']:.0f} s]",
                    flush=True,
                )
    return rows


def _find(rows: list[dict[str, Any]], model: str, length: int) -> dict[str, Any]:
    return next((row for row in rows if row["model"] == model and row["length"] == length), {})


def report(rows: list[dict[str, Any]], args: argparse.Namespace, info: dict[str, Any], command: str) -> str:
    measured = sorted({row["length"] for row in rows})
    reference = args.reference_length if args.reference_length in measured else measured[-1]
    base = _find(rows, "Transformer", reference)
    paper_rows = []
    for model in args.models:
        row = _find(rows, model, reference)
        steps = ratio(1.0, row.get("median_s"))
        paper_speed, paper_memory = paper.TEXT_4K_EFFICIENCY.get(RECIPES[model][2], (None, None))
        paper_rows.append(
            [
                model,
                row.get("error") or fmt(steps),
                fmt_ratio(ratio(base.get("median_s"), row.get("median_s"))),
                "–" if paper_speed is None else f"{paper_speed:g}×",
                fmt(row.get("peak_mib"), 4),
                fmt_ratio(ratio(row.get("peak_mib"), base.get("peak_mib"))),
                "–" if paper_memory is None else f"{paper_memory:g}×",
                f"{row['params']:,}" if "params" in row else "–",
            ]
        )
    length_rows = [
        [
            row["model"],
            row["length"],
            row.get("error") or fmt(row.get("median_s")),
            fmt(ratio(1.0, row.get("median_s"))),
            fmt(row.get("peak_mib"), 4),
        ]
        for row in sorted(rows, key=lambda row: (args.models.index(row["model"]), row["length"]))
    ]
    lines = [
        *publish.header(command, info, args.threads),
        f"- Batch {args.batch_size}, random byte tokens without padding; one step = forward, cross-entropy, "
        f"backward, AdamW update; {args.warmup} warm-up step(s), median of {args.repeats} timed steps",
        f"- Models: the Text recipes in conf/arch/ (MEGA and Mega-chunk c = "
        f"{net_options('Mega-chunk', 1)['chunk_size']}: App. D; Megalodon and Megalodon-chunk: Megalodon App. C; "
        "Transformer: the LRA baseline), training mode",
        "",
        f"Text at length {reference}, relative to the Transformer (paper: Table 2, GPU):",
        "",
        markdown_table(
            [
                "model",
                "steps/s",
                "speed (×Transformer)",
                "paper speed",
                "peak MiB",
                "memory (×Transformer)",
                "paper memory",
                "parameters",
            ],
            paper_rows,
        ),
        "",
        "Every length:",
        "",
        markdown_table(["model", "length", "s/step", "steps/s", "peak MiB"], length_rows),
    ]
    if args.plot:
        location = os.path.relpath(args.plot, args.markdown.parent)
        lines += ["", f"![step time and peak memory against sequence length]({location})"]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], args: argparse.Namespace, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for model in args.models:
        ok = sorted((row["length"], row) for row in rows if row["model"] == model and "error" not in row)
        lengths = [length for length, _ in ok]
        time_axes.plot(lengths, [row["median_s"] for _, row in ok], marker="o", label=model)
        memory_axes.plot(lengths, [row["peak_mib"] for _, row in ok], marker="o", label=model)
    lengths = sorted({row["length"] for row in rows})
    for axes, label in ((time_axes, "seconds per training step"), (memory_axes, "peak memory (MiB)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(lengths, [str(length) for length in lengths])
        axes.minorticks_off()
        axes.set_yscale("log")
        axes.set_xlabel("sequence length")
        axes.set_ylabel(label)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    command = publish.command_line("experiments.efficiency", argv if argv is not None else sys.argv[1:])
    info = publish.machine_info(args.device)
    print(
        f"efficiency on {info['device']} ({info.get('gpu') or info['cpu']}), torch {info['torch']}: {command}"
    )
    rows = run(args)
    if args.plot:
        device = info.get("gpu") or f"CPU, {args.threads} threads"
        plot(rows, args, f"Text classifier training step, batch {args.batch_size}, {device}")
    text = report(rows, args, info, command)
    publish.write("efficiency", text, args, {"machine": info, "command": command, "rows": rows})
    if args.plot:
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()
