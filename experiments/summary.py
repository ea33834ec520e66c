"""Print an experiment's resolved recipe and its parameter counts, without loading any data.

    python -m experiments.summary experiment=lra_text
    python -m experiments.summary experiment=lra_image_chunk model.chunk_size=256
    python -m experiments.summary experiment=lra_text model=transformer

The last line is a JSON object with `params/total` and `params/embedding` (token or real-number embedding), the
paper's "#Params" column being `params/total` minus `params/embedding` where vocabularies differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from tasks.resolvers import register_resolvers

CONF = Path(__file__).resolve().parent.parent / "conf"
RECIPE_NODES = ("data", "model", "optimizer", "scheduler", "trainer")


def compose(overrides: list[str]) -> DictConfig:
    """The config train.py would run with these overrides (Hydra's compose API, `${hydra:...}` resolvable)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra.compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = (
            "<run dir>"  # nothing is written: a placeholder for ${paths.output_dir}
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


def build_model(cfg: DictConfig):
    """Instantiate `cfg.model` (the network only: no datamodule, no trainer)."""
    return hydra.utils.instantiate(cfg.model)


def summary(overrides: list[str]) -> tuple[str, dict]:
    """(resolved recipe as YAML, {"experiment", "model", "params/total", "params/embedding"})."""
    cfg = compose(overrides)
    recipe = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in RECIPE_NODES if k in cfg}
    text = OmegaConf.to_yaml(OmegaConf.create(recipe))
    counts = build_model(cfg).param_counts()
    choices = cfg.hydra.runtime.choices
    info = {
        "experiment": choices.get("experiment"),
        "model": choices.get("model"),
        "params/total": counts["total"],
        "params/embedding": counts["embedding"],
    }
    return text, info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    text, info = summary(argv)
    print(text, end="")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
