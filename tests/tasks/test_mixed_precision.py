"""Training in mixed precision on CPU: the demos under bf16-mixed and 16-mixed (with the grad scaler), the stop at a
non-finite loss or gradient, and the count of the grad scaler's skipped updates."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

import train
from tasks.training.callbacks import NonFiniteCheck, NonFiniteError
from tests.test_train import run

CASES = {
    "listops-bf16": ["experiment=lra_listops_demo", "trainer.precision=bf16-mixed"],
    "listops-fp16": ["experiment=lra_listops_demo", "trainer.precision=16-mixed"],
    "listops-transformer-bf16": [
        "experiment=lra_listops",
        "model=transformer",
        "model.hidden_size=16",
        "model.attention_size=16",
        "model.intermediate_size=32",
        "model.num_hidden_layers=1",
        "data.batch_size=4",
        "trainer.precision=bf16-mixed",
    ],
    "image-fp16": ["experiment=lra_image_demo", "trainer.precision=16-mixed", "data.batch_size=4"],
    "lm-bf16": ["experiment=lm_demo", "trainer.precision=bf16-mixed", "module.sample_tokens=8"],
}


def metric_columns(run_dir: Path) -> set[str]:
    rows = list(csv.DictReader(next(run_dir.glob("csv/version_*/metrics.csv")).open()))
    return {key for row in rows for key, value in row.items() if value}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_demo_trains_in_mixed_precision(make_cfg, overrides: list[str]):
    cfg = make_cfg(*overrides, "data.eval_batch_size=4")
    results = run(cfg)
    assert results["steps"] == 4 and math.isfinite(results["test/loss"])
    columns = metric_columns(Path(cfg.paths.output_dir))
    fp16 = "trainer.precision=16-mixed" in overrides
    # 16-mixed runs fp16 autocast with a grad scaler on CPU too (Lightning alone would switch it to bf16)
    assert ("train/grad_scale" in columns) == fp16 and ("train/scaler_skipped_steps" in columns) == fp16


class PoisonWeights(L.Callback):
    """Puts a NaN into the first parameter as update `step` + 1 starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_non_finite_loss_stops_the_run(make_cfg, precision: str):
    cfg = make_cfg(
        "experiment=lra_listops_demo",
        f"trainer.precision={precision}",
        "trainer.max_steps=6",
        "+callbacks.poison._target_=tests.tasks.test_mixed_precision.PoisonWeights",
        "+callbacks.poison.step=2",
    )
    with pytest.raises(NonFiniteError) as error:
        train.train(cfg)
    message = str(error.value)
    assert "update 3 " in message and f"precision {precision}" in message and "the loss is NaN" in message
    assert "optimizer.lr" in message and ("trainer.precision=32-true" in message) == (precision != "32-true")


class Overflowing(L.LightningModule):
    """A loss whose fp16 gradients overflow until the grad scaler has backed off far enough."""

    def __init__(self, loss_scale: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 8)
        self.loss_scale = loss_scale

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).float().square().mean() * self.loss_scale

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-9)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)))
        return torch.utils.data.DataLoader(data, batch_size=4)


def fit_fp16(module: L.LightningModule, check: NonFiniteCheck, steps: int) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        plugins=[MixedPrecision("16-mixed", "cpu")],
        callbacks=[check],
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    return trainer


def test_scaler_skipped_updates_are_counted():
    check = NonFiniteCheck()
    trainer = fit_fp16(Overflowing(1e3), check, steps=16)
    final_scale = trainer.precision_plugin.scaler.get_scale()
    # each skipped update halves the scale (it only grows after 2000 good updates)
    assert check.skipped_steps == round(math.log2(2.0**16 / final_scale)) > 0
    assert trainer.callback_metrics["train/scaler_skipped_steps"] == check.skipped_steps
    assert check.state_dict()["skipped_steps"] == check.skipped_steps


def test_too_many_consecutive_skips_stop_the_run():
    with pytest.raises(NonFiniteError, match="skipped 3 updates in a row"):
        fit_fp16(Overflowing(1e30), NonFiniteCheck(max_consecutive_skips=3), steps=10)
