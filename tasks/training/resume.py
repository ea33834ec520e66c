"""What makes a run that stopped gracefully resume exactly: last.ckpt at the end of fit, and the epoch left open.

A run resumes from `last.ckpt` (README "Resume"). A kill leaves the checkpoint of the last periodic or best save,
written during an epoch, and Lightning continues that epoch. A graceful stop (`trainer.max_steps`,
`trainer.max_time`, early stopping) ends fit instead: Lightning closes the epoch (counts it as processed) before
it writes last.ckpt at train end. Resumed from that, Lightning (2.6, with `max_steps`) starts the next epoch but
keeps counting the stopped epoch's batches: stopped mid-epoch, the loader moves to the next permutation
(`ResumableSampler.set_epoch`) and the rest of the epoch is never seen; stopped at an epoch's last batch, the next
epoch ends after one batch. `reopen_stopped_epoch` marks a closed epoch as not yet processed, as in a checkpoint
written at the validation after its last trained batch, which Lightning resumes exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class LastCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint that also writes last.ckpt when fit ends, whatever ended it (Lightning's writes it then only
    if this callback wrote none earlier in the process), so a stopped run resumes from its last update."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skips: saved at this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def reopen_stopped_epoch(checkpoint: dict[str, Any]) -> None:
    """In place: if the checkpoint's epoch is processed (written after the epoch loop ended), mark it running."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    batches, epochs = fit_loop.get("epoch_loop.batch_progress"), fit_loop.get("epoch_progress")
    if batches is None or epochs is None:
        return  # not a Lightning fit checkpoint
    reopened = False
    for counts in (epochs["total"], epochs["current"]):
        if counts["started"] > 0 and counts["processed"] == counts["started"]:  # the epoch loop has ended
            counts["processed"] = counts["completed"] = counts["started"] - 1
            reopened = True
    if reopened:
        checkpoint["epoch"] = epochs["current"]["completed"]
        log.info(
            "Epoch %d stopped after %d batches: recorded as running, so a resumed run continues it",
            checkpoint["epoch"],
            batches["current"]["completed"],
        )
