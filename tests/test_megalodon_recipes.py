"""Megalodon recipes: every LRA task and SC-Raw composes with model=megalodon / megalodon_chunk, has the paper's
chunk sizes and shared settings (Megalodon App. C), known parameter counts, and trains a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

import train
from mega.megalodon import CODE_VARIANT, MegalodonConfig
from tests.conftest import CONF_DIR, TINY_MODEL, compose_config

TASKS = ["lra_listops", "lra_text", "lra_retrieval", "lra_image", "lra_pathfinder", "lra_pathx", "sc_raw"]
# chunk size (Megalodon, Megalodon-chunk): App. C.1 (c = 128, Path-X 4096; full attention otherwise), App. C.2 (SC)
CHUNKS = {task: (-1, 128) for task in TASKS} | {"lra_pathx": (-1, 4096), "sc_raw": (1000, 1000)}
# total parameters of our recipes (RoPE has no parameters: chunking does not change them); the paper gives
# only SC-Raw's, "300K" (Table 7)
PARAMS = {
    "lra_listops": 554_560,
    "lra_text": 910_720,
    "lra_retrieval": 1_365_504,
    "lra_image": 2_657_600,
    "lra_pathfinder": 1_300_096,
    "lra_pathx": 242_432,
    "sc_raw": 320_700,
}
TINY = {**TINY_MODEL, "norm_num_groups": 2}  # the tiny MEGA of the other tests, in 2 norm groups
SMOKE = {"lra_pathx": ["data.pool=8", "data.max_length=256"]}  # as tests/test_train.py
DEMOS = sorted(p.stem for p in (CONF_DIR / "arch" / "megalodon").glob("*_demo.yaml"))


def compose(tmp_path: Path, *overrides: str):
    return compose_config(list(overrides), tmp_path / "run", tmp_path / "data")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", ["megalodon", "megalodon_chunk"])
def test_recipe(tmp_path, task, model):
    cfg = compose(tmp_path, f"experiment={task}", f"model={model}")
    m = cfg.model
    assert m._target_ == "mega.MegalodonForSequenceClassification"
    assert m.chunk_size == CHUNKS[task][model == "megalodon_chunk"]
    shared = (m.normalization_type, m.positional_encoding, m.bidirectional, m.num_attention_heads, m.pooling)
    assert shared == ("groupnorm", "rope", True, 1, "mean")
    net = instantiate(m)
    assert net.param_counts()["total"] == PARAMS[task]
    # the training settings are the experiment's, the same as MEGA's (App. C adopts them)
    mega = compose(tmp_path, f"experiment={task}")
    for node in ("optimizer", "scheduler", "trainer", "data"):
        assert cfg[node] == mega[node], node


def test_every_demo_but_the_language_model_has_a_megalodon_size():
    demos = {p.stem for p in (CONF_DIR / "experiment").glob("*_demo.yaml")} - {"lm_demo"}
    assert set(DEMOS) == demos


def test_code_variant_config_is_the_code_variant(tmp_path):
    code = compose(tmp_path, "experiment=lra_text", "model=megalodon_code").model
    paper = compose(tmp_path, "experiment=lra_text", "model=megalodon").model
    assert {key: code[key] for key in CODE_VARIANT} == CODE_VARIANT
    assert {key: paper[key] for key in CODE_VARIANT} == {
        key: field.default
        for key, field in MegalodonConfig.__dataclass_fields__.items()
        if key in CODE_VARIANT
    }
    assert {k: v for k, v in code.items() if k not in CODE_VARIANT} == {
        k: v for k, v in paper.items() if k not in CODE_VARIANT
    }


def test_chunk_model_equals_chunk_experiment(tmp_path):
    by_model = compose(tmp_path, "experiment=lra_text", "model=megalodon_chunk").model
    by_experiment = compose(tmp_path, "experiment=lra_text_chunk", "model=megalodon").model
    assert by_model == by_experiment


def run(cfg) -> dict:
    train.main(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


# `make test`: each task at tiny sizes and the ListOps demo; slow: the recipes' own sizes, and the other demos
FAST = [*TASKS, "lra_listops_demo"]
SLOW = [(e, False) for e in [*TASKS, *DEMOS]] + [(e, True) for e in DEMOS if e not in FAST]
RUNS = [(e, True) for e in FAST] + [pytest.param(*run, marks=pytest.mark.slow) for run in SLOW]


@pytest.mark.parametrize("experiment, tiny", RUNS)
def test_trains_a_few_steps(make_cfg, experiment, tiny):
    sizes = [f"model.{key}={value}" for key, value in TINY.items()] if tiny else []
    cfg = make_cfg(
        f"experiment={experiment}",
        "model=megalodon",
        "trainer.max_steps=2",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        *SMOKE.get(experiment, []),
        *sizes,
    )
    results = run(cfg)
    assert results["steps"] == 2 and 0.0 <= results["test/acc"] <= 1.0
