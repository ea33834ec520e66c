"""What a run reports besides its metrics files: the progress bar, one line per validation in train.log, and
the offline W&B run's config and summary as plain files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.callbacks import RichProgressBar

log = logging.getLogger(__name__)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without "Epoch 5/-2" when steps bound the run (`max_epochs: -1`)."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = super()._get_train_description(current_epoch)
        max_epochs = self.trainer.max_epochs
        return (
            description.replace(f"/{max_epochs - 1}", "", 1)
            if max_epochs is not None and max_epochs < 0
            else description
        )


class LogValidation(L.Callback):
    """A line per validation in the log (train.log): step, epoch and every `val/` metric, so that a run folder can
    be read without its CSV or W&B files."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
        if metrics:
            values = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
            log.info(
                "Validation at step %d (epoch %d): %s", trainer.global_step, trainer.current_epoch, values
            )


def write_offline_files(run: Any) -> None:
    """An offline W&B run keeps its config and summary only in its binary log until `wandb sync`: write them into
    its `files/` folder as `config.yaml` and `wandb-summary.json`, as an online run has them."""
    folder = Path(run.dir)
    config = {key: {"value": value} for key, value in dict(run.config).items()}
    (folder / "config.yaml").write_text(
        yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False)
    )
    summary = {key: value for key, value in dict(run.summary).items() if not key.startswith("_")}
    (folder / "wandb-summary.json").write_text(json.dumps(summary, default=str, indent=2))
