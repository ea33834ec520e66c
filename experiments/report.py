"""Our runs next to the paper's: a Markdown table (tasks × models, mean ± std over seeds), the other configurations,
what was left out and why, and a bar chart.

    python -m experiments.report outputs/                       # every job folder below (results.json + .hydra/)
    python -m experiments.report multirun/paper_table --out report/
    python -m experiments.report wandb:ENTITY/PROJECT           # the runs of a W&B project (online)
    python -m experiments.report outputs/ --include-standin --include-debug --include-unfinished

- Each run is read from its resolved config (`.hydra/config.yaml` of its job folder; a W&B run's logged config),
  its `results.json` (a W&B run's summary) and its command-line overrides.
- Runs are grouped by their config: runs in one group differ in nothing but the seed and options that cannot
  change a result (IGNORED: output paths, loggers, worker and thread counts, activation checkpointing, ...). Only a group is averaged.
- The model of a group comes from its config: the family from `model._target_`, the variant from its options
  (MEGA-chunk when `model.chunk_size` > 0); see experiments/paper.py, which also holds the paper's numbers.
- A group whose runs changed nothing of their experiment's recipe but the seed, the model family (`model=`) and the
  hardware (HARDWARE: `trainer=gpu`, devices, precision) stands next to the paper's number for that recipe and
  model. Every other group is a row of "Other configurations", named by what it changed, next to no paper number.
- Self-pretraining (docs/spt.md): a run fine-tuned from another run (`init_from`; results.json records that run) is
  `<model> + SPT` (`+ causal SPT`), grouped by the pretraining run's recipe and what it changed (not by its path),
  in its task's row next to the same model from scratch when both runs changed nothing of their recipes. The
  pretraining runs themselves are left out and named (their metric is the denoising loss).
- Left out unless asked for, each run named: runs on stand-in data (`data.synthetic=true`; --include-standin),
  debug runs (`debug=...`; --include-debug), runs that stopped before `trainer.max_steps` (--include-unfinished:
  each then a group of its own). Always left out and named: runs without `test/acc`, and every job folder without
  `results.json` (crashed, killed or still running), which also gets a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import paper

log = logging.getLogger("experiments.report")

# Options that cannot change a run's result: never a reason to keep runs apart (prefixes of dotted keys).
# `data.seed` follows `seed` (the data order): runs that differ in the seeds are what a group averages.
IGNORED = (
    "seed",
    "data.seed",
    "name",
    "tags",
    "paths",
    "logger",
    "hydra",
    "ckpt_path",
    "init_from",  # the path of the run started from: its record (results.json) is part of the signature instead
    "torch_threads",
    "model.activation_checkpointing",  # recomputes activations in the backward: the same gradients
    "hparams_search",
    "optimized_metric",
    "failed_trial_value",
    "data.num_workers",
    "data.pin_memory",
    "data.root_dir",
    "data.data_dir",
    "data.release_dir",
    "data.cache_dir",
    "data.hf_cache_dir",
    "data.hub_cache",
    "data.download",
    "data.verify_cache",
    "trainer.default_root_dir",
    "trainer.log_every_n_steps",
    "trainer.enable_progress_bar",
    "callbacks.progress_bar",
    "callbacks.model_summary",
    "callbacks.lr_monitor",
    "callbacks.periodic_checkpoint",
    "callbacks.validation_log",
)
# Overrides that keep a run the paper's recipe (they may still change its config: such groups get their own column)
HARDWARE = (
    "trainer",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
    "trainer.sync_batchnorm",
)
CHOICES = ("experiment", "model")  # the recipe and the model family, not changes of the recipe
LEFT_OUT = {
    "standin": "on stand-in data (data.synthetic=true; --include-standin)",
    "debug": "of a debug preset (debug=...; --include-debug)",
    "unfinished": "stopped before trainer.max_steps (--include-unfinished)",
    "no_test": "without test/acc (the test did not run: test=false, or it failed)",
    "no_results": "without results.json (crashed, killed or still running; or not valid JSON)",
    "pretraining": "of self-pretraining (scored by their denoising loss; the runs fine-tuned from them are reported)",
}
FAILED = "✗"  # the paper's mark for chance level or out of memory


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") or key.startswith(p + "/") for p in IGNORED)


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """`["experiment=lra_text", "+foo=1", "~bar"]` → `{"experiment": "lra_text", "foo": "1"}`."""
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if sep:
            out[key.lstrip("+~")] = value
    return out


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → dotted keys; W&B's flattened "model/_target_" becomes "model._target_" too."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = prefix + str(key).replace("/", ".")
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def resolved_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A saved Hydra config, flat, with each interpolation resolved where it can be without Hydra's runtime
    (`${data.vocab_size}` is; `${hydra:...}` and the app's own resolvers stay as written)."""
    config = OmegaConf.create(dict(raw))
    flat = flatten(OmegaConf.to_container(config, resolve=False))
    for key, value in flat.items():
        if "${" in str(value):
            try:
                selected = OmegaConf.select(config, key)
                flat[key] = (
                    OmegaConf.to_container(selected, resolve=True)
                    if OmegaConf.is_config(selected)
                    else selected
                )
            except OmegaConfBaseException:
                pass
    return flat


@dataclass
class Run:
    """One training run: where it came from, its resolved config, overrides, results and Hydra's choices."""

    source: str
    config: dict[str, Any]  # flat (dotted keys)
    overrides: dict[str, str] | None  # None: not known (a W&B run without its command line)
    result: dict[str, Any] | None  # None: the run has no results
    choices: dict[str, Any] = field(default_factory=dict)  # Hydra's config-group choices (local runs)

    @property
    def experiment(self) -> str | None:
        overrides = self.overrides or {}
        name = overrides.get("experiment") or self.choices.get("experiment")
        name = name or (self.result or {}).get("experiment") or self.config.get("name")
        return None if name is None or "${" in str(name) else str(name)

    @property
    def seed(self) -> int | None:
        return paper.as_int(self.config.get("seed", (self.overrides or {}).get("seed")))

    @property
    def base_model(self) -> str:
        return paper.model_name(self.config)

    @property
    def model(self) -> str:
        """The model name, `+ SPT` (`+ causal SPT`) when fine-tuned from a self-pretraining run (init_from)."""
        record = self.started_from
        if record is None:
            return self.base_model
        objective = (record.get("pretraining") or {}).get("objective")
        kind = {"masked": "SPT", "causal": "causal SPT"}.get(objective, "init_from")
        return f"{self.base_model} + {kind}"

    @property
    def started_from(self) -> dict[str, Any] | None:
        """The record of the run whose encoder this run started from (results.json `init_from`), if any."""
        record = (self.result or {}).get("init_from")
        return record if isinstance(record, dict) else None

    @property
    def is_pretraining(self) -> bool:
        return str(self.config.get("module._target_") or "").endswith("PretrainingModule")

    def pretraining_changes(self) -> list[str]:
        """What the run started from changed of its own recipe (as `pretraining key=value`)."""
        record = self.started_from
        if record is None:
            return []
        overrides = parse_overrides(record.get("overrides") or [])
        changes = [
            f"pretraining {k}={v}" for k, v in overrides.items() if not ignored(k) and k not in CHOICES
        ]
        return changes + ([] if record.get("finished") else ["pretraining unfinished"])

    @property
    def debug(self) -> str | None:
        """The debug preset this run used (`debug=smoke`), if any."""
        preset = (
            self.choices.get("debug")
            or (self.overrides or {}).get("debug")
            or self.config.get("debug_preset")
        )
        return None if preset in (None, "null") else str(preset)

    @property
    def standin(self) -> bool:
        return (
            str(self.config.get("data.synthetic", (self.overrides or {}).get("data.synthetic"))).lower()
            == "true"
        )

    @property
    def stopped_at(self) -> int | None:
        """The step this run stopped at when that is before its `trainer.max_steps`, else None."""
        steps = paper.as_int((self.result or {}).get("steps"))
        max_steps = paper.as_int(self.config.get("trainer.max_steps"))
        return steps if steps is not None and max_steps is not None and 0 <= steps < max_steps else None

    @property
    def accuracy(self) -> float | None:
        """test/acc as a percentage (our metrics are fractions in [0, 1], the paper prints percent)."""
        acc = (self.result or {}).get("test/acc")
        if not isinstance(acc, int | float) or isinstance(acc, bool) or math.isnan(acc):
            return None
        return 100.0 * acc

    @property
    def metrics(self) -> dict[str, float]:
        values = (self.result or {}).items()
        return {k: float(v) for k, v in values if isinstance(v, int | float) and not isinstance(v, bool)}

    def changes(self) -> list[str]:
        """The overrides that change this run's recipe or hardware, as `key=value` (then those of the run it
        started from)."""
        own = [f"{k}={v}" for k, v in (self.overrides or {}).items() if not ignored(k) and k not in CHOICES]
        return own + self.pretraining_changes()

    def is_recipe(self) -> bool:
        """Nothing changed but the seed and the hardware (so its config is its experiment's recipe; a fine-tuning
        run's pretraining also its own experiment's recipe)."""
        return self.overrides is not None and all(
            change.removeprefix("pretraining ").partition("=")[0] in HARDWARE for change in self.changes()
        )

    def signature(self) -> tuple:
        """What a group's runs share: every option that can change a result (and, when included, where an
        unfinished run stopped)."""
        options = tuple(
            sorted(
                (k, json.dumps(v, sort_keys=True, default=str))
                for k, v in self.config.items()
                if not ignored(k)
            )
        )
        if (
            self.started_from is not None
        ):  # what it started from: the same pretraining recipe, not the same path
            record = self.started_from
            started = [record.get("experiment"), record.get("pretraining"), self.pretraining_changes()]
            options += (("started from", json.dumps(started, sort_keys=True, default=str)),)
        return options + ((("stopped at step", str(self.stopped_at)),) if self.stopped_at is not None else ())


# ---------------------------------------------------------------- loading


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_local(root: Path) -> list[Run]:
    """Every job folder below `root`: a folder with `.hydra/config.yaml` or `results.json`."""
    folders = {p.parent for p in root.rglob("results.json")}
    folders |= {p.parent.parent for p in root.rglob("config.yaml") if p.parent.name == ".hydra"}
    runs = []
    for folder in sorted(folders):
        hydra = folder / ".hydra"
        result = None
        if (folder / "results.json").is_file():
            try:
                result = json.loads((folder / "results.json").read_text())
            except json.JSONDecodeError as err:
                log.warning("%s/results.json: not valid JSON (%s): left out", folder, err)
        else:
            log.warning(
                "%s: no results.json (the job crashed, was killed or is still running; see its train.log)",
                folder,
            )
        raw = _read_yaml(hydra / "config.yaml")
        overrides_list = (result or {}).get("overrides")
        if overrides_list is None:
            overrides_list = _read_yaml(hydra / "overrides.yaml")
        overrides = parse_overrides(overrides_list) if overrides_list is not None else None
        if raw is None:
            log.warning("%s: no .hydra/config.yaml: grouped by its command-line overrides alone", folder)
            config = dict(overrides or {})
        else:
            config = resolved_config(raw)
        choices = (
            ((_read_yaml(hydra / "hydra.yaml") or {}).get("hydra") or {})
            .get("runtime", {})
            .get("choices", {})
        )
        runs.append(Run(str(folder), config, overrides, result, choices or {}))
    return runs


def load_wandb(project: str) -> list[Run]:
    """The runs of a W&B project ("entity/project") through its public API (needs the network). The overrides are
    the run's command line as W&B recorded it; a run that did not finish is named and has no results."""
    import wandb

    runs = []
    for wb_run in wandb.Api().runs(project):
        args = (getattr(wb_run, "metadata", None) or {}).get("args")
        result = None
        if wb_run.state == "finished":
            result = {k: v for k, v in wb_run.summary.items() if not k.startswith("_")}
        else:
            log.warning(
                "%s: W&B state %r: no results (crashed, killed or still running)", wb_run.url, wb_run.state
            )
        config = flatten(dict(wb_run.config))
        runs.append(Run(wb_run.url, config, parse_overrides(args) if args is not None else None, result))
    return runs


# ---------------------------------------------------------------- selecting and grouping


def select(
    runs: list[Run], standin: bool = False, debug: bool = False, unfinished: bool = False
) -> tuple[list[Run], dict[str, list[Run]]]:
    """The runs to report, and those left out by reason (LEFT_OUT's keys)."""
    kept, left_out = [], defaultdict(list)
    for run in runs:
        if run.result is None:
            reason = "no_results"
        elif run.debug and not debug:
            reason = "debug"
        elif run.standin and not standin:
            reason = "standin"
        elif run.stopped_at is not None and not unfinished:
            reason = "unfinished"
        elif run.is_pretraining:
            reason = "pretraining"
        elif run.accuracy is None:
            reason = "no_test"
        else:
            kept.append(run)
            continue
        left_out[reason].append(run)
    return kept, dict(left_out)


@dataclass
class Group:
    """Runs with the same config but the seed: the unit that is averaged."""

    runs: list[Run]
    model: str
    experiment: str
    changes: list[str]
    published: paper.Published | None = None
    paper_row: str | None = None  # the task whose paper recipe it ran unchanged (its row of the paper table)
    base_model: str = ""  # the model without `+ SPT`: orders the paper table's columns
    detail: list[str] = field(default_factory=list)  # options that tell it from a group with the same name

    @property
    def label(self) -> str:
        extra = [*self.changes, *self.detail]
        if self.runs[0].stopped_at is not None:
            extra.append(f"stopped at step {self.runs[0].stopped_at}")
        return f"{self.model} ({', '.join(extra)})" if extra else self.model

    @property
    def row(self) -> str:
        return self.paper_row or self.experiment

    @property
    def accuracies(self) -> list[float]:
        return [run.accuracy for run in self.runs if run.accuracy is not None]

    @property
    def seeds(self) -> list[int | None]:
        return [run.seed for run in self.runs]


def group(runs: list[Run]) -> list[Group]:
    """Group runs by signature; name each group; match recipe groups with the paper (see the module docstring)."""
    by_signature: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_signature[run.signature()].append(run)
    groups = []
    for members in by_signature.values():
        # stand-in, debug and unfinished runs are never put next to the paper, whatever their overrides say
        comparable = not any(run.standin or run.debug or run.stopped_at is not None for run in members)
        recipe_runs = [run for run in members if comparable and run.is_recipe()]
        named = recipe_runs or members
        experiments = sorted({run.experiment or "(no experiment)" for run in named})
        model, base = members[0].model, members[0].base_model
        changes = list(dict.fromkeys(change for run in named for change in run.changes()))
        published = next(
            (p for run in recipe_runs if (p := paper.published_for(run.experiment, model)) is not None), None
        )
        # a self-pretrained group stands in the row of its model's recipe, next to that model from scratch
        recipe = next(
            (p for run in recipe_runs if (p := paper.published_for(run.experiment, base)) is not None), None
        )
        row = recipe.task if recipe else None
        groups.append(Group(members, model, ", ".join(experiments), changes, published, row, base))
        seeds = [run.seed for run in members]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}, key=str):
            log.warning(
                "%s: seed %s appears %d times (reruns are averaged as separate runs)",
                groups[-1].label,
                seed,
                seeds.count(seed),
            )
    _tell_apart(groups)
    return groups


def _tell_apart(groups: list[Group]) -> None:
    """Groups that would share a row and a name get the options in which their configs differ."""
    clashes: dict[tuple[str, str, bool], list[Group]] = defaultdict(list)
    for g in groups:
        clashes[(g.row, g.label, g.paper_row is not None)].append(g)
    for clash in clashes.values():
        if len(clash) < 2:
            continue
        configs = [g.runs[0].config for g in clash]
        keys = sorted({k for c in configs for k in c if not ignored(k)})
        differing = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
        for g, config in zip(clash, configs):
            g.detail = [f"{k}={_show(config.get(k))}" for k in differing[:4]] + (
                ["…"] if len(differing) > 4 else []
            )


def _show(value: Any) -> str:
    return "absent" if value is None else json.dumps(value) if isinstance(value, list | dict) else str(value)


# ---------------------------------------------------------------- tables


def mean_std(values: list[float]) -> str:
    """Format as `90.12 ± 0.31 (n=5)`; the std is the sample standard deviation over seeds."""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def _paper_cell(task: str, model: str) -> str:
    entry = paper.published(task, model)
    if entry is None:
        return "–"
    return FAILED if entry.accuracy is None else f"{entry.accuracy:.2f}"


def paper_columns(groups: list[Group]) -> list[tuple[str, str]]:
    """(label, model) of the paper table's columns: the paper's models in order, each from scratch, then
    self-pretrained (`+ SPT`), then the labels with changes."""
    order = paper.model_order()
    base = {g.model: g.base_model for g in groups}
    labels = {(g.label, g.model) for g in groups if g.paper_row}

    def key(column: tuple[str, str]) -> tuple:
        label, model = column
        family = base.get(model, model)
        return (
            order.index(family) if family in order else len(order),
            model != family,
            label != model,
            label,
        )

    return sorted(labels, key=key)


def _markdown(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def paper_table(groups: list[Group]) -> list[str]:
    """Tasks × models, ours (mean ± std over seeds) next to the paper, the LRA average and #Params."""
    columns = paper_columns(groups)
    if not columns:
        return ["No group ran a paper recipe unchanged (see Other configurations)."]
    cells = {(g.row, g.label): g for g in groups if g.paper_row}
    tasks = [t for t in paper.TASKS if any((t, label) in cells for label, _ in columns)]
    header = ["Task"] + [f"{label} ({who})" for label, _ in columns for who in ("ours", "paper")]
    rows = []
    for task in tasks:
        row = [task]
        for label, model in columns:
            cell = cells.get((task, label))
            row += [mean_std(cell.accuracies) if cell else "–", _paper_cell(task, model)]
        rows.append(row)
    lra = [t for t, benchmark in paper.TASKS.items() if benchmark == "LRA"]
    average = ["LRA avg"]
    for label, model in columns:
        means = [statistics.fmean(cells[(t, label)].accuracies) for t in lra if (t, label) in cells]
        published = paper.LRA_AVERAGE.get(model)
        average += [
            f"{statistics.fmean(means):.2f}" if len(means) == len(lra) else "–",
            "–" if published is None else f"{published:.2f}",
        ]
    rows.append(average)
    params_rows = []
    for task in tasks:
        row = [task]
        for label, _ in columns:
            metrics = cells[(task, label)].runs[0].metrics if (task, label) in cells else {}
            total, embedding = metrics.get("params/total"), metrics.get("params/embedding", 0)
            row.append("–" if total is None else f"{int(total):,} / {int(total - embedding):,}")
        params_rows.append(row)
    sources = ", ".join(dict.fromkeys(g.published.source for g in groups if g.published)) or "none"
    return [
        *_markdown(header, rows),
        "",
        *_markdown(["#Params (total / without embedding)"] + [label for label, _ in columns], params_rows),
        "",
        f"Test accuracy (%) of the best-validation checkpoint, mean ± sample std over seeds. Paper: {sources}; "
        f"{FAILED} = chance level or out of memory. LRA avg is over all six LRA tasks, Path-X included, as in the "
        "paper; shown only when all six have runs. A column with options in its name ran the recipe on other "
        "hardware settings. `+ SPT` columns: the same recipe fine-tuned from a self-pretraining run of the "
        "task's `_spt` experiment (init_from; docs/spt.md); the MEGA paper has no such runs (–).",
    ]


def other_table(groups: list[Group]) -> list[str]:
    others = sorted((g for g in groups if not g.paper_row), key=lambda g: (g.experiment, g.label))
    if not others:
        return []
    rows = [
        [g.experiment, g.label, mean_std(g.accuracies), ", ".join(str(s) for s in g.seeds)] for g in others
    ]
    return [
        "## Other configurations",
        "",
        "Runs that are not a paper recipe as it stands (or have no published number): not comparable with the paper.",
        "",
        *_markdown(["Experiment", "Model (what it changed)", "Test acc (%)", "Seeds"], rows),
    ]


def markdown_report(groups: list[Group], left_out: dict[str, list[Run]], source: str) -> str:
    runs = sum(len(g.runs) for g in groups)
    lines = [
        f"# Report: {source}",
        "",
        f"{count(runs, 'run')} in {count(len(groups), 'group')}.",
        "",
        "## Against the paper",
        "",
    ]
    lines += paper_table(groups)
    other = other_table(groups)
    if other:
        lines += ["", *other]
    if left_out:
        lines += ["", "## Left out", ""]
        for reason, runs_out in left_out.items():
            lines.append(f"- {count(len(runs_out), 'run')} {LEFT_OUT[reason]}:")
            lines += [f"  - {run.source}" for run in runs_out]
    lines += ["", "## Runs of each group", ""]
    for g in sorted(groups, key=lambda g: (g.row, g.label)):
        lines.append(f"- {g.row}, {g.label}: " + ", ".join(run.source for run in g.runs))
    return "\n".join(lines)


def bar_chart(groups: list[Group], path: Path) -> list[str]:
    """Bars (mean, std error bars) per row and group name; the paper's value as a black tick where it has one.
    Returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper_labels = [label for label, _ in paper_columns(groups)]
    labels = paper_labels + sorted({g.label for g in groups} - set(paper_labels))
    rows = [t for t in paper.TASKS if any(g.paper_row == t for g in groups)]
    rows += sorted({g.row for g in groups if not g.paper_row} - set(rows))
    width = 0.8 / max(len(labels), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.4 * len(rows)), 4.0))
    ticks = 0
    for i, label in enumerate(labels):
        xs, means, stds = [], [], []
        for j, row in enumerate(rows):
            cell = next((g for g in groups if g.row == row and g.label == label), None)
            if cell is None:
                continue
            x = j + (i - (len(labels) - 1) / 2) * width
            xs.append(x)
            means.append(statistics.fmean(cell.accuracies))
            stds.append(statistics.stdev(cell.accuracies) if len(cell.accuracies) > 1 else 0.0)
            if cell.published and cell.published.accuracy is not None:
                axes.scatter([x], [cell.published.accuracy], marker="_", s=300, color="black", zorder=3)
                ticks += 1
        axes.bar(xs, means, width, yerr=stds, capsize=3, label=label)
    if ticks:
        axes.scatter([], [], marker="_", s=300, color="black", label="paper")
    axes.set_xticks(range(len(rows)), rows, rotation=20)
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    legend = axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the bars
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return [text.get_text() for text in legend.get_texts()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="a runs folder (outputs/, multirun/...) or wandb:ENTITY/PROJECT")
    parser.add_argument(
        "--out", type=Path, help="folder for report.md and report.png (default: <source>/report)"
    )
    parser.add_argument("--include-standin", action="store_true", help="also runs on stand-in data")
    parser.add_argument(
        "--include-debug",
        action="store_true",
        help="also debug runs (debug=smoke, ...; those run on stand-in data: add --include-standin)",
    )
    parser.add_argument(
        "--include-unfinished", action="store_true", help="also runs that stopped before trainer.max_steps"
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
    kept, left_out = select(runs, args.include_standin, args.include_debug, args.include_unfinished)
    for reason, runs_out in left_out.items():
        if reason != "no_results":  # each of those was named when it was read
            names = ", ".join(run.source for run in runs_out)
            log.warning("left out %s %s: %s", count(len(runs_out), "run"), LEFT_OUT[reason], names)
    if not kept:
        print(f"no reportable runs in {args.source} (see the warnings above)", file=sys.stderr)
        return 1
    groups = group(kept)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown_report(groups, left_out, args.source)
    (out / "report.md").write_text(text + "\n")
    bar_chart(groups, out / "report.png")
    print(text)
    print(
        f"\nwrote {out / 'report.md'} and {out / 'report.png'} from {count(len(kept), 'run')} in {count(len(groups), 'group')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
