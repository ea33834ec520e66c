"""The published results our runs are compared with, kept in this one place, each with its source.

MEGA paper: X. Ma, C. Zhou, X. Kong, J. He, L. Gui, G. Neubig, J. May, L. Zettlemoyer, "Mega: Moving Average
Equipped Gated Attention", ICLR 2023 (arXiv:2209.10655):
- Table 2, LRA test accuracy (%). MEGA rows are means over 5 seeds; "Transformer" is the row XFM‡, the authors' own
  reproduction of the LRA Transformer; ✗ = failed (chance level). MEGA-chunk uses c = 128, on Path-X c = 4096.
  Its "Speed" and "Mem" columns: training speed and memory on Text at length 4K, relative to XFM‡.
- Table 4, SC-Raw (Speech Commands SC10 on the raw 16,000 samples) test accuracy (%). Its "MEGA (base)" is itself
  chunked with c = 1000 (App. D.3), so it is MEGA-chunk here; the Transformer (XFM) ran out of memory (✗).

Megalodon paper: X. Ma, X. Yang, W. Xiong, B. Chen, L. Yu, H. Zhang, J. May, L. Zettlemoyer, O. Levy, C. Zhou,
"Megalodon: Efficient LLM Pretraining and Inference with Unlimited Context Length", 2024 (arXiv:2404.08801):
- Table 6, LRA test accuracy (%) of MEGALODON and MEGALODON-chunk (c = 128, on Path-X c = 4096: App. C.1).
- Table 7, SC-Raw accuracy (%) of MEGALODON (300K parameters, chunk c = 1000: App. C.2): Megalodon-chunk here, as
  MEGA's chunked SC-Raw base.

How `experiments.report` uses this file:
- a run's model family is the `Family` whose `targets` holds the class name of its resolved `model._target_`, and
  its model name is `Family.variant(config)` (MEGA: "MEGA-chunk" when `model.chunk_size` > 0, else "MEGA");
- a group of runs that changed nothing of a recipe but the seed and the hardware stands next to the `Published`
  entry with that recipe (experiment) and model name, in the row `Published.task`.

Adding a model family (e.g. Megalodon and its paper's numbers) is a change of this file only: a `Family` in
FAMILIES, its `Published` rows in PUBLISHED (with the experiments that reproduce them) and its LRA_AVERAGE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MEGA_TABLE_2 = "MEGA paper (ICLR 2023), Table 2"
MEGA_TABLE_4 = "MEGA paper (ICLR 2023), Table 4"
MEGALODON_TABLE_6 = "Megalodon paper (arXiv 2404.08801), Table 6"
MEGALODON_TABLE_7 = "Megalodon paper (arXiv 2404.08801), Table 7"


def as_int(value: Any) -> int | None:
    """An integer option read from a config or a command-line override ("128"), else None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Family:
    """A model family: how its runs are recognised and what its variants are called."""

    name: str
    targets: tuple[str, ...]  # class names, matched against the last dotted part of `model._target_`
    variant: Callable[[Mapping[str, Any]], str] | None = None  # flat config -> model name (None: `name`)

    def model_name(self, config: Mapping[str, Any]) -> str:
        return self.variant(config) if self.variant else self.name


def mega_variant(config: Mapping[str, Any]) -> str:
    """MEGA-chunk when attention is chunked (model.chunk_size > 0), else MEGA (one chunk = the whole input)."""
    chunk = as_int(config.get("model.chunk_size"))
    return "MEGA-chunk" if chunk is not None and chunk > 0 else "MEGA"


def megalodon_variant(config: Mapping[str, Any]) -> str:
    """Megalodon-chunk when attention is chunked (model.chunk_size > 0), else Megalodon."""
    chunk = as_int(config.get("model.chunk_size"))
    return "Megalodon-chunk" if chunk is not None and chunk > 0 else "Megalodon"


FAMILIES: tuple[Family, ...] = (
    Family("MEGA", ("MegaForSequenceClassification",), mega_variant),
    Family("Megalodon", ("MegalodonForSequenceClassification",), megalodon_variant),
    Family("Transformer", ("TransformerForSequenceClassification",)),
)

# row title -> benchmark; the order of the report's rows. The LRA average is over the six "LRA" rows.
TASKS: dict[str, str] = {
    "ListOps": "LRA",
    "Text": "LRA",
    "Retrieval": "LRA",
    "Image": "LRA",
    "Pathfinder": "LRA",
    "Path-X": "LRA",
    "SC-Raw base": "SC",
    "SC-Raw big": "SC",
}


@dataclass(frozen=True)
class Published:
    """One published test accuracy and the experiments (conf/experiment/<name>.yaml) whose recipe reproduces it."""

    task: str  # a row of TASKS
    model: str  # a model name given by a Family
    accuracy: float | None  # test accuracy (%); None = ✗ (failed: chance level or out of memory)
    recipes: tuple[str, ...]
    source: str


def _table_2(
    model: str,
    recipe_suffix: str,
    scores: dict[str, float | None],
    source: str = MEGA_TABLE_2,
    also: tuple[str, ...] = (),
) -> list[Published]:
    """One row of an LRA table: the recipe of each task is `<experiment><recipe_suffix>` (and `<experiment><a>` for
    each suffix a in `also`)."""
    experiments = {
        "ListOps": "lra_listops",
        "Text": "lra_text",
        "Retrieval": "lra_retrieval",
        "Image": "lra_image",
        "Pathfinder": "lra_pathfinder",
        "Path-X": "lra_pathx",
    }
    return [
        Published(task, model, score, tuple(experiments[task] + a for a in (recipe_suffix, *also)), source)
        for task, score in scores.items()
    ]


PUBLISHED: tuple[Published, ...] = (
    *_table_2(
        "MEGA",
        "",
        {
            "ListOps": 63.14,
            "Text": 90.43,
            "Retrieval": 91.25,
            "Image": 90.44,
            "Pathfinder": 96.01,
            "Path-X": 97.98,
        },
    ),
    *_table_2(
        "MEGA-chunk",
        "_chunk",
        {
            "ListOps": 58.76,
            "Text": 90.19,
            "Retrieval": 90.97,
            "Image": 85.80,
            "Pathfinder": 94.41,
            "Path-X": 93.81,
        },
    ),
    *_table_2(
        "Megalodon",
        "",
        {
            "ListOps": 63.79,
            "Text": 90.48,
            "Retrieval": 91.76,
            "Image": 89.42,
            "Pathfinder": 98.13,
            "Path-X": 98.17,
        },
        MEGALODON_TABLE_6,
    ),
    # experiment=<task>_chunk model=megalodon, or experiment=<task> model=megalodon_chunk (the same config)
    *_table_2(
        "Megalodon-chunk",
        "_chunk",
        {
            "ListOps": 62.23,
            "Text": 90.53,
            "Retrieval": 91.74,
            "Image": 87.11,
            "Pathfinder": 96.89,
            "Path-X": 97.21,
        },
        MEGALODON_TABLE_6,
        also=("",),
    ),
    *_table_2(
        "Transformer",
        "",
        {
            "ListOps": 37.11,
            "Text": 65.21,
            "Retrieval": 79.14,
            "Image": 42.94,
            "Pathfinder": 71.83,
            "Path-X": None,
        },
    ),
    Published("SC-Raw base", "MEGA-chunk", 96.92, ("sc_raw", "sc_raw_chunk"), MEGA_TABLE_4),
    Published("SC-Raw base", "Megalodon-chunk", 98.14, ("sc_raw", "sc_raw_chunk"), MEGALODON_TABLE_7),
    Published("SC-Raw big", "MEGA-chunk", 97.30, ("sc_raw_big", "sc_raw_big_chunk"), MEGA_TABLE_4),
    Published("SC-Raw base", "Transformer", None, ("sc_raw",), MEGA_TABLE_4),
)

# the "Avg" column of MEGA's Table 2 and Megalodon's Table 6 (over the six LRA tasks, Path-X included)
LRA_AVERAGE: dict[str, float] = {
    "MEGA": 88.21,
    "MEGA-chunk": 85.66,
    "Megalodon": 88.63,
    "Megalodon-chunk": 87.62,
    "Transformer": 59.24,
}

# Table 2's "Speed" and "Mem" columns: Text at length 4K, relative to the Transformer (XFM‡); the Megalodon paper
# reports none for its LRA models
TEXT_4K_EFFICIENCY: dict[str, tuple[float, float]] = {
    "Transformer": (1.0, 1.0),
    "MEGA": (2.9, 0.31),
    "MEGA-chunk": (5.5, 0.13),
}


def family_of(config: Mapping[str, Any]) -> Family | None:
    target = str(config.get("model._target_") or "")
    return next((f for f in FAMILIES if target.rsplit(".", 1)[-1] in f.targets), None)


def model_name(config: Mapping[str, Any]) -> str:
    """The run's model from its resolved config: its family's name for it, else the class it instantiated."""
    family = family_of(config)
    if family is not None:
        return family.model_name(config)
    target = config.get("model._target_")
    return str(target).rsplit(".", 1)[-1] if target else "unknown model (no model._target_)"


def published_for(experiment: str | None, model: str) -> Published | None:
    """The published result that `experiment`'s recipe with this model reproduces, if any."""
    return next((p for p in PUBLISHED if experiment in p.recipes and p.model == model), None)


def published(task: str, model: str) -> Published | None:
    return next((p for p in PUBLISHED if p.task == task and p.model == model), None)


def model_order() -> list[str]:
    """Model names in the order PUBLISHED, then FAMILIES, give them (the report's column order)."""
    return list(dict.fromkeys([*(p.model for p in PUBLISHED), *(f.name for f in FAMILIES)]))


def experiments() -> list[str]:
    """Every experiment that reproduces a published result, in the tables' order."""
    return list(dict.fromkeys(recipe for p in PUBLISHED for recipe in p.recipes))
