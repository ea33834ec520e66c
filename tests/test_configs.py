"""Every config composes, and every experiment resolves to a complete, instantiable description."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import EXPERIMENTS


def test_default_config_composes(make_cfg) -> None:
    cfg = make_cfg()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["module"]["net"] == resolved["model"]
    assert resolved["model"]["vocab_size"] == resolved["data"]["vocab_size"]
    assert resolved["name"] == "train"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}")
    app = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    resolved = OmegaConf.to_container(app, resolve=True, throw_on_missing=True)
    assert resolved["name"]
    assert resolved["model"]["num_labels"] == resolved["data"]["num_classes"]
    instantiate(cfg.trainer, logger=False, enable_progress_bar=False)


@pytest.mark.parametrize(
    "group,choices",
    [
        ("trainer", ["cpu", "default", "gpu", "ddp"]),
        ("logger", ["csv", "wandb", "many"]),
        ("scheduler", ["linear_decay", "cosine"]),
        ("optimizer", ["adamw", "adam_fairseq"]),
        ("callbacks", ["none"]),
    ],
)
def test_group_choices_compose(make_cfg, group: str, choices: list[str]) -> None:
    for choice in choices:
        cfg = make_cfg(f"{group}={choice}")
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
