"""The Appendix D recipes: official parameter counts, training values, the Transformer baseline, scale-out configs.

Expected values are transcribed from docs/recipes.md (#per-task-recipes, #parameter-counts), independently of conf/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments import summary
from tests.conftest import CONF_DIR, compose_config
from tests.official import OFFICIAL_PARAMS

# batch per step, update-freq, paper's effective batch, peak lr, weight decay, warm-up, updates, warm-up power
TRAINING = {
    "lra_listops": (64, 1, 64, 0.001, 0.01, 3_000, 90_000, 1),
    "lra_text": (25, 2, 50, 0.004, 0.01, 10_000, 25_000, 1),
    "lra_retrieval": (8, 8, 64, 0.003, 0.04, 10_000, 91_960, 1),
    "lra_image": (50, 1, 50, 0.01, 0.02, 9_000, 180_000, 1),
    "lra_pathfinder": (128, 1, 128, 0.01, 0.01, 50_000, 250_000, 1),
    "lra_pathx": (
        16,
        8,
        128,
        0.01,
        0.01,
        25_000,
        125_000,
        2,
    ),  # one device: 16 × 8 (docs/recipes.md#path-x-on-one-device)
    "sc_raw": (20, 1, 20, 0.01, 0.01, 10_000, 250_000, 1),
    "sc_raw_big": (20, 1, 20, 0.008, 0.01, 10_000, 250_000, 1),
}

# attention function, norm, prenorm, dropout p, EMA truncation, chunk (MEGA, Mega-chunk)
ARCHITECTURE = {
    "lra_listops": ("softmax", "layernorm", False, 0.1, 1024, (-1, 128)),
    "lra_text": ("softmax", "scalenorm", False, 0.1, 1024, (-1, 128)),
    "lra_retrieval": ("softmax", "scalenorm", False, 0.1, 1024, (-1, 128)),
    "lra_image": ("laplace", "batchnorm", True, 0.0, 1024, (-1, 128)),
    "lra_pathfinder": ("laplace", "batchnorm", True, 0.0, 1024, (-1, 128)),
    "lra_pathx": ("laplace", "batchnorm", True, 0.0, 4096, (-1, 4096)),
    "sc_raw": ("laplace", "batchnorm", True, 0.0, 1000, (1000, 1000)),
    "sc_raw_big": ("laplace", "batchnorm", True, 0.0, 1000, (1000, 1000)),
}


def compose(tmp_path: Path, *overrides: str):
    return compose_config(list(overrides), tmp_path / "run", tmp_path / "data")


def test_every_paper_experiment_is_covered():
    experiments = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")}
    assert set(OFFICIAL_PARAMS) <= experiments
    assert {f"{task}_chunk" for task in TRAINING} | set(TRAINING) == set(OFFICIAL_PARAMS)


@pytest.mark.parametrize("experiment", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_official(tmp_path, experiment):
    cfg = compose(tmp_path, f"experiment={experiment}")
    counts = instantiate(cfg.model).param_counts()
    tokens = cfg.data.input_kind == "tokens"
    assert counts["total"] - (counts["embedding"] if tokens else 0) == OFFICIAL_PARAMS[experiment]
    if not tokens:
        assert counts["embedding"] == 2 * cfg.model.hidden_size  # x·w + b


@pytest.mark.parametrize("task", sorted(TRAINING))
@pytest.mark.parametrize("variant", ["", "_chunk"])
def test_recipe_values(tmp_path, task, variant):
    cfg = compose(tmp_path, f"experiment={task}{variant}")
    batch, update_freq, effective, lr, wd, warmup, updates, power = TRAINING[task]
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (batch, update_freq)
    assert batch * update_freq == effective
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (lr, wd)
    assert (cfg.scheduler.warmup_steps, cfg.trainer.max_steps, cfg.scheduler.warmup_power) == (
        warmup,
        updates,
        power,
    )
    # shared by every recipe (docs/recipes.md#shared-settings)
    assert cfg.optimizer._target_ == "tasks.training.optim.FairseqAdam" and list(cfg.optimizer.betas) == [
        0.9,
        0.98,
    ]
    assert (
        cfg.optimizer.eps == 1e-8 and cfg.module.no_weight_decay == []
    )  # decoupled decay on every parameter
    assert cfg.scheduler._target_ == "tasks.training.optim.linear_decay"
    assert (cfg.scheduler.warmup_init_lr, cfg.scheduler.end_lr) == (1e-7, 0.0)
    assert (cfg.trainer.gradient_clip_val, cfg.trainer.gradient_clip_algorithm) == (1.0, "norm")
    assert cfg.trainer.precision == "32-true"

    attention, norm, prenorm, dropout, truncation, chunks = ARCHITECTURE[task]
    model = cfg.model
    assert (model.attention_activation, model.normalization_type, model.normalize_before_mega) == (
        attention,
        norm,
        prenorm,
    )
    assert model.normalize_before_ffn == prenorm and model.dropout_prob == dropout
    assert model.classifier_dropout == dropout and model.truncation == truncation
    assert model.chunk_size == chunks[variant == "_chunk"]
    assert (model.ema_projection_size, model.relative_positional_bias, model.pooling) == (
        16,
        "simple",
        "mean",
    )
    assert (
        model.hidden_dropout_prob
        == model.nffn_activation_dropout_prob
        == model.attention_probs_dropout_prob
        == 0.0
    )


@pytest.mark.parametrize("task", sorted(p.stem for p in (CONF_DIR / "arch" / "transformer").glob("*.yaml")))
def test_transformer_baseline_on_every_task(tmp_path, task):
    cfg = compose(tmp_path, f"experiment={task}", "model=transformer")
    net = instantiate(cfg.model)
    assert type(net).__name__ == "TransformerForSequenceClassification"
    assert net.config.max_positions == cfg.data.max_length
    length = 8
    kind = cfg.data.input_kind
    x = torch.randint(1, cfg.data.vocab_size, (2, length)) if kind == "tokens" else torch.randn(2, length)
    extra = {"input2": x} if cfg.data.dual_encoder else {}
    assert net(x, None, **extra).shape == (2, cfg.data.num_classes)


def test_transformer_needs_a_task_size(tmp_path):
    with pytest.raises(Exception, match="arch/transformer/lra_listops_chunk"):
        compose(tmp_path, "experiment=lra_listops_chunk", "model=transformer")


def test_summary_prints_recipe_and_param_counts(capsys):
    assert summary.main(["experiment=lra_listops_chunk", "model.chunk_size=64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    info = json.loads(lines[-1])
    assert info["experiment"] == "lra_listops_chunk" and info["model"] == "mega"
    assert (
        info["params/total"] - info["params/embedding"] == OFFICIAL_PARAMS["lra_listops_chunk"] - 6 * 2 * 64
    )
    assert "  chunk_size: 64" in lines and "  max_steps: 90000" in lines


def test_ddp_trainer_syncs_batchnorm(tmp_path):
    cfg = compose(tmp_path, "experiment=lra_listops", "trainer=ddp", "model.normalization_type=batchnorm")
    assert (cfg.trainer.strategy, cfg.trainer.sync_batchnorm) == ("ddp", True)
    assert cfg.trainer.precision == "32-true"  # the recipe's fp32 wins over the ddp trainer's default
    # Lightning converts every torch BatchNorm to SyncBatchNorm: MEGA's batchnorm must be one
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(instantiate(cfg.model))
    sync = [m for m in net.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(sync) == 2 * cfg.model.num_hidden_layers
    assert not any(type(m) is torch.nn.BatchNorm1d for m in net.modules())


def test_slurm_launcher_composes(tmp_path):
    cfg = compose(
        tmp_path, "experiment=lra_listops", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=8"
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["tasks_per_node"] == 8 and launcher["submitit_folder"].endswith(".submitit/%j")


def test_optuna_search_space_composes(tmp_path):
    cfg = compose(tmp_path, "experiment=lra_listops", "hparams_search=mega_optuna")
    assert cfg.hydra.sweeper._target_.endswith("optuna_sweeper.OptunaSweeper")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.optimized_metric == "val/acc_best"
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.weight_decay", "model.dropout_prob"}
    assert cfg.failed_trial_value == 0.0
