"""Shared fixtures: compose the app's config the way `python train.py` does, redirected to a temp folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tasks.resolvers import register_resolvers

# tests use tiny tensors: intra-op threads only add waiting, and on a busy machine each parallel region waits
# for descheduled threads (a 3×16 Linear: 27 ms with 2 threads vs 9 µs with 1, load average 15 on 2 cores)
torch.set_num_threads(1)
register_resolvers()

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))

# a tiny MEGA (model.<key>=<value>): every experiment's model shrunk so a few CPU steps take seconds
TINY_MODEL = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "intermediate_size": 16,
    "shared_representation_size": 8,
    "nffn_hidden_size": 16,
    "ema_projection_size": 2,
}


def compose_config(overrides: list[str], run_dir: Path, data_dir: Path) -> DictConfig:
    """The composed config with Hydra's runtime set (so `${hydra:...}` resolves), writing under temp folders."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(
            "config", overrides=[f"paths.data_dir={data_dir}", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session: generated stand-in sets and their caches are shared between tests."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """make_cfg(*overrides, run="run") → a smoke config (CPU, stand-in data, CSV logger) in tmp_path/run."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config(["debug=smoke", *overrides], tmp_path / run, data_dir)

    yield make
    GlobalHydra.instance().clear()
