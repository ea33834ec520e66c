"""How the trainer writes and reads checkpoints: Lightning's torch.save/torch.load with the checksums of
`tasks.training.state` (stored in every checkpoint written, verified on every checkpoint read: resume and test),
and checkpoint bookkeeping that follows a run into another folder (a copied run, or `hydra.run.dir` set on resume).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tasks.training.state import read_checkpoint, with_checksums

log = logging.getLogger(__name__)


class VerifiedCheckpointIO(TorchCheckpointIO):
    """`Trainer(plugins=[VerifiedCheckpointIO()])`: checkpoints carry checksums; damaged files fail naming the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        super().save_checkpoint(with_checksums(checkpoint), path, storage_options)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return read_checkpoint(path, map_location=map_location)  # always weights_only: a checkpoint is data


class RelocatedCheckpoints(L.Callback):
    """Resuming from a checkpoint written in another folder: the checkpoint callbacks' records (best, k-th best,
    last file) are moved to this run's checkpoint folder, so the run continues exactly as in its own folder.

    A recorded file that this folder lacks is copied from the original folder; one that is gone from both is
    forgotten, and the best checkpoint is then chosen again among this run's validations (logged)."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        mine = {c.state_key: c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.dirpath}
        for key, state in checkpoint.get("callbacks", {}).items():
            callback = mine.get(key)
            if (
                callback is None
                or not state.get("dirpath")
                or Path(state["dirpath"]) == Path(callback.dirpath)
            ):
                continue
            relocate(state, Path(state["dirpath"]), Path(callback.dirpath))


def relocate(state: dict[str, Any], source: Path, target: Path) -> None:
    """Rewrite a ModelCheckpoint state recorded in folder `source` for folder `target` (in place)."""

    def moved(path: str) -> str | None:  # the file in `target` (copied there if need be), None if it is gone
        here = target / Path(path).name
        if not here.exists() and Path(path).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, here)
            log.info("Resuming in another folder: copied %s to %s", path, here)
        return str(here) if here.exists() else None

    log.info("The checkpoints were recorded in %s; this run keeps them in %s", source, target)
    best = {path: moved(path) for path in (state.get("best_k_models") or {})}
    recorded = [state[f] for f in ("best_model_path", "kth_best_model_path") if state.get(f)]
    best.update({path: moved(path) for path in recorded if path not in best})
    if None in best.values():
        log.warning(
            "The best checkpoint recorded in %s is gone from there and from %s: the best checkpoint is chosen "
            "again among this run's validations",
            source,
            target,
        )
        state.update(best_k_models={}, best_model_path="", best_model_score=None, kth_best_model_path="")
    else:
        state["best_k_models"] = {
            best[path]: score for path, score in (state.get("best_k_models") or {}).items()
        }
        for field in ("best_model_path", "kth_best_model_path"):
            state[field] = best.get(state.get(field), state.get(field))
    if state.get("last_model_path"):  # written again at the next save
        state["last_model_path"] = str(target / Path(state["last_model_path"]).name)
    state["dirpath"] = str(target)
