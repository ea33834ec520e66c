"""Put our runs next to the paper: a Markdown table (tasks × models, mean ± std over seeds) and a bar chart.

    python -m experiments.report outputs/                      # every results.json under a folder
    python -m experiments.report wandb:ENTITY/PROJECT          # finished runs of a W&B project (online)
    python -m experiments.report outputs/ --out report/        # where report.md and report.png go

A run is identified by its experiment name (`lra_text`, `lra_text_chunk`, ...), its model (`model=transformer`,
`model=megalodon`, `model=megalodon_chunk`), its chunk size (one that is not the paper's, e.g. `model.chunk_size=64`,
gets its own column) and its seed; the score is `test/acc` (best-validation checkpoint).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger("experiments.report")

# experiment name (without the `_chunk` suffix) → column title; LRA tasks first, in the paper's order
TASKS = {
    "lra_listops": "ListOps",
    "lra_text": "Text",
    "lra_retrieval": "Retrieval",
    "lra_image": "Image",
    "lra_pathfinder": "Pathfinder",
    "lra_pathx": "Path-X",
    "sc_raw": "SC-Raw base",
    "sc_raw_big": "SC-Raw big",
}
LRA_TASKS = [t for t in TASKS if t.startswith("lra_")]
MODELS = ["MEGA", "MEGA-chunk", "Megalodon", "Megalodon-chunk", "Transformer"]
FAILED = "✗"  # the paper's mark for chance-level or out-of-memory

# Test accuracy (%) from the MEGA paper: Table 2 (LRA; MEGA rows are 5-seed means; "Transformer" is XFM‡, the
# authors' reproduction) and Table 4 (SC-Raw; base is itself MEGA-chunk with c = 1000; XFM ran out of memory);
# Megalodon and Megalodon-chunk from the Megalodon paper (arXiv 2404.08801): Table 6 (LRA) and Table 7 (SC-Raw).
PAPER: dict[str, dict[str, float | str]] = {
    "lra_listops": {"MEGA": 63.14, "MEGA-chunk": 58.76, "Megalodon": 63.79, "Megalodon-chunk": 62.23, "Transformer": 37.11},
    "lra_text": {"MEGA": 90.43, "MEGA-chunk": 90.19, "Megalodon": 90.48, "Megalodon-chunk": 90.53, "Transformer": 65.21},
    "lra_retrieval": {"MEGA": 91.25, "MEGA-chunk": 90.97, "Megalodon": 91.76, "Megalodon-chunk": 91.74, "Transformer": 79.14},
    "lra_image": {"MEGA": 90.44, "MEGA-chunk": 85.80, "Megalodon": 89.42, "Megalodon-chunk": 87.11, "Transformer": 42.94},
    "lra_pathfinder": {"MEGA": 96.01, "MEGA-chunk": 94.41, "Megalodon": 98.13, "Megalodon-chunk": 96.89, "Transformer": 71.83},
    "lra_pathx": {"MEGA": 97.98, "MEGA-chunk": 93.81, "Megalodon": 98.17, "Megalodon-chunk": 97.21, "Transformer": FAILED},
    "sc_raw": {"MEGA": 96.92, "MEGA-chunk": 96.92, "Megalodon": 98.14, "Transformer": FAILED},  # Megalodon: c = 1000
    "sc_raw_big": {"MEGA": 97.30},
}  # fmt: skip
PAPER_LRA_AVG = {
    "MEGA": 88.21,
    "MEGA-chunk": 85.66,
    "Megalodon": 88.63,
    "Megalodon-chunk": 87.62,
    "Transformer": 59.24,
}
# the paper's chunk size per task: (MEGA, MEGA-chunk); -1 = full attention (paper §4.1, App. D.3); Megalodon's are
# the same (Megalodon App. C.1: c = 128, Path-X 4096; C.2: SC-Raw 1000)
PAPER_CHUNK = {task: (-1, 128) for task in LRA_TASKS} | {
    "lra_pathx": (-1, 4096),
    "sc_raw": (1000, 1000),
    "sc_raw_big": (1000, 1000),
}


@dataclass
class Run:
    """One finished training run: where it came from, what it was, and its metrics."""

    source: str
    task: str
    model: str
    seed: int | None
    metrics: dict[str, float] = field(default_factory=dict)


def _overrides_to_dict(overrides: Iterable[str]) -> dict[str, str]:
    """`["experiment=lra_text", "+foo=1", "~bar"]` → `{"experiment": "lra_text", "foo": "1"}`."""
    out = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def _lookup(config: dict, dotted: str):
    """`config["model"]["_target_"]` for "model._target_", also accepting W&B's flattened "model/_target_"."""
    for flat in (dotted, dotted.replace(".", "/")):
        if flat in config:
            return config[flat]
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def identify(result: dict, config: dict | None = None, source: str = "") -> Run | None:
    """Build a Run from a results.json dict (and the run's composed config when there is one).

    Returns None (with a log line saying why) when the run cannot be placed in the table.
    """
    config = config or {}
    overrides = _overrides_to_dict(result.get("overrides") or [])
    experiment = result.get("experiment") or overrides.get("experiment") or _lookup(config, "name")
    if not experiment:
        log.warning(
            "%s: no experiment name (results.json key 'experiment' or override 'experiment=') — skipped",
            source,
        )
        return None
    chunked = experiment.endswith("_chunk")
    task = experiment.removesuffix("_chunk")
    target = str(overrides.get("model") or _lookup(config, "model._target_") or "")
    chunk = overrides.get("model.chunk_size", _lookup(config, "model.chunk_size"))
    if "transformer" in target.lower():
        model = "Transformer"
    elif "megalodon" in target.lower():
        model = _megalodon_column(task, chunk, chunked or target.endswith("_chunk"))
    else:
        model = "MEGA-chunk" if chunked else "MEGA"
        paper_chunk = PAPER_CHUNK.get(task, (None, None))[chunked]
        if chunk is not None and paper_chunk is not None and int(chunk) != paper_chunk:
            model = f"MEGA (c={chunk})"  # a chunk-size sweep is its own column, not the paper's MEGA-chunk
    seed = result.get("seed", overrides.get("seed", _lookup(config, "seed")))
    metrics = {
        k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return Run(
        source=source, task=task, model=model, seed=None if seed is None else int(seed), metrics=metrics
    )


def _megalodon_column(task: str, chunk, chunked: bool) -> str:
    """Megalodon or Megalodon-chunk by the run's chunk size (the paper's two for the task), else its own column.

    Without a known chunk size, the experiment name or `model=megalodon_chunk` decides. SC-Raw has one model.
    """
    full, chunk_variant = PAPER_CHUNK.get(task, (None, None))
    if chunk is None:
        return "Megalodon-chunk" if chunked and full != chunk_variant else "Megalodon"
    if int(chunk) == full:
        return "Megalodon"
    if int(chunk) == chunk_variant:
        return "Megalodon-chunk"
    return f"Megalodon (c={chunk})"


def load_local(root: Path) -> list[Run]:
    """Every `results.json` under root; `.hydra/config.yaml` next to it fills in what results.json lacks."""
    runs = []
    for path in sorted(root.rglob("results.json")):
        try:
            result = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            log.warning("%s: not valid JSON (%s) — skipped", path, err)
            continue
        hydra_config = path.parent / ".hydra" / "config.yaml"
        config = yaml.safe_load(hydra_config.read_text()) if hydra_config.exists() else None
        run = identify(result, config, source=str(path))
        if run is not None:
            runs.append(run)
    return runs


def load_wandb(project: str) -> list[Run]:
    """Finished runs of a W&B project ("entity/project"), read through the public API (needs network)."""
    import wandb

    runs = []
    for wb_run in wandb.Api().runs(project, filters={"state": "finished"}):
        result = {k: v for k, v in wb_run.summary.items() if not k.startswith("_")}
        run = identify(result, dict(wb_run.config), source=wb_run.url)
        if run is not None:
            runs.append(run)
    return runs


def accuracy_percent(run: Run) -> float | None:
    """test/acc as a percentage (our metrics are fractions in [0, 1], the paper prints percent)."""
    acc = run.metrics.get("test/acc")
    return None if acc is None or math.isnan(acc) else 100.0 * acc


def aggregate(runs: list[Run]) -> dict[tuple[str, str], list[float]]:
    """(task, model) → test accuracies (%) over seeds; runs without test/acc are logged and left out."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        acc = accuracy_percent(run)
        if acc is None:
            log.warning(
                "%s: no test/acc (the run did not finish its test) — left out of the table", run.source
            )
            continue
        cells[(run.task, run.model)].append(acc)
    return cells


def mean_std(values: list[float]) -> str:
    """Format as `90.12 ± 0.31 (n=5)`; the std is the sample standard deviation over seeds."""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def _paper_cell(task: str, model: str) -> str:
    value = PAPER.get(task, {}).get(model)
    return "–" if value is None else value if isinstance(value, str) else f"{value:.2f}"


def model_columns(cells: dict[tuple[str, str], list[float]]) -> list[str]:
    """The paper's models first, then any other label (chunk-size sweeps), each only if it has a run."""
    present = {model for _, model in cells}
    return [m for m in MODELS if m in present] + sorted(present - set(MODELS))


def task_rows(cells: dict[tuple[str, str], list[float]]) -> list[str]:
    present = {task for task, _ in cells}
    return [t for t in TASKS if t in present] + sorted(present - set(TASKS))


def markdown_table(runs: list[Run]) -> str:
    """Tasks × models, ours (mean ± std over seeds) next to the paper, with the LRA average and #Params."""
    cells = aggregate(runs)
    models, tasks = model_columns(cells), task_rows(cells)
    header = ["Task"] + [f"{m} ({who})" for m in models for who in ("ours", "paper")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task in tasks:
        row = [TASKS.get(task, task)]
        for model in models:
            values = cells.get((task, model))
            row += [mean_std(values) if values else "–", _paper_cell(task, model)]
        lines.append("| " + " | ".join(row) + " |")
    avg_row = ["LRA avg"]
    for model in models:
        means = [statistics.fmean(cells[(t, model)]) for t in LRA_TASKS if cells.get((t, model))]
        ours = f"{statistics.fmean(means):.2f}" if len(means) == len(LRA_TASKS) else "–"
        paper = PAPER_LRA_AVG.get(model)
        avg_row += [ours, "–" if paper is None else f"{paper:.2f}"]
    lines.append("| " + " | ".join(avg_row) + " |")
    lines += ["", params_table(runs, tasks, models)]
    lines.append(
        "\nTest accuracy (%) of the best-validation checkpoint. Paper: MEGA, ICLR 2023, Table 2 (LRA; Transformer ="
        " XFM‡, the authors' reproduction) and Table 4 (SC-Raw); Megalodon, arXiv 2404.08801, Table 6 (LRA) and"
        " Table 7 (SC-Raw). ✗ = chance level or out of memory. LRA avg is"
        " over all six LRA tasks, Path-X included, as in the paper; shown only when all six have runs."
    )
    return "\n".join(lines)


def params_table(runs: list[Run], tasks: list[str], models: list[str]) -> str:
    """#Params per task and model: total, and without the token/real-number embedding."""
    counts: dict[tuple[str, str], tuple[int, int]] = {}
    for run in runs:
        if "params/total" in run.metrics:
            counts[(run.task, run.model)] = (
                int(run.metrics["params/total"]),
                int(run.metrics.get("params/embedding", 0)),
            )
    lines = [
        "| #Params (total / without embedding) | " + " | ".join(models) + " |",
        "|" + "---|" * (len(models) + 1),
    ]
    for task in tasks:
        row = [TASKS.get(task, task)]
        for model in models:
            total, emb = counts.get((task, model), (None, None))
            row.append("–" if total is None else f"{total:,} / {total - emb:,}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def bar_chart(runs: list[Run], path: Path) -> None:
    """Grouped bars (ours, mean with std error bars) per task, with the paper's value as a black tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = aggregate(runs)
    models, tasks = model_columns(cells), task_rows(cells)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(tasks)), 4.0))
    for i, model in enumerate(models):
        xs, means, stds, paper_xs, paper_ys = [], [], [], [], []
        for j, task in enumerate(tasks):
            x = j + (i - (len(models) - 1) / 2) * width
            values = cells.get((task, model))
            if values:
                xs.append(x)
                means.append(statistics.fmean(values))
                stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            paper = PAPER.get(task, {}).get(model)
            if isinstance(paper, float):
                paper_xs.append(x)
                paper_ys.append(paper)
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=f"{model} (ours)")
        ax.scatter(paper_xs, paper_ys, marker="_", s=300, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=300, color="black", label="paper")
    ax.set_xticks(range(len(tasks)), [TASKS.get(t, t) for t in tasks], rotation=20)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="a runs folder (searched for results.json) or wandb:ENTITY/PROJECT")
    parser.add_argument(
        "--out", type=Path, help="output folder for report.md and report.png (default: <source>/report)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if args.source.startswith("wandb:"):
        runs = load_wandb(args.source.removeprefix("wandb:"))
        out = args.out or Path("report")
    else:
        root = Path(args.source)
        if not root.is_dir():
            parser.error(f"{root} is not a folder; pass the runs folder (e.g. outputs/ or multirun/)")
        runs = load_local(root)
        out = args.out or root / "report"
    if not runs:
        print(f"no usable runs found in {args.source} (see the warnings above)", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(runs)
    (out / "report.md").write_text(table + "\n")
    bar_chart(runs, out / "report.png")
    print(table)
    print(f"\nwrote {out / 'report.md'} and {out / 'report.png'} from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
