"""The LightningModule of every classification task: cross-entropy over Contract-1 batches.

The network is built by Hydra from the `model:` config and passed in; the optimizer and scheduler come as partials
(`_partial_: true`), so a recipe lives entirely in YAML (`conf/module/classification.yaml`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from lightning import LightningModule
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MaxMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from tasks.training.optim import parameter_groups
from tasks.training.resume import reopen_stopped_epoch
from tasks.training.state import (
    check_model_options,
    count_parameters,
    net_class_name,
    options_of,
    rng_states,
    set_rng_states,
)

log = logging.getLogger(__name__)


class ClassificationModule(LightningModule):
    """Cross-entropy over Contract-1 batches; accuracy for train/val/test; AdamW groups; per-step schedules.

    Args:
        net: the classifier; called as `net(**batch_without_label)` and returns `[B, num_classes]` logits.
        optimizer: partial optimizer taking parameter groups (e.g. AdamW with lr, betas, eps, weight_decay).
        scheduler: partial `linear_decay`/`cosine` taking (optimizer, total_steps); None for a constant lr.
        num_classes: number of classes (from `${data.num_classes}`).
        no_weight_decay: parameter kinds exempt from weight decay, among "bias", "norm", "embedding".
        compile: run the net through `torch.compile` (`nn.Module.compile`: parameter names and checkpoints stay
            those of the eager net, so either loads the other's checkpoints); a dict gives torch.compile's
            keyword arguments, e.g. {backend: aot_eager}.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., LambdaLR] | None = None,
        num_classes: int = 2,
        no_weight_decay: list[str] | tuple[str, ...] = (),
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"num_classes": num_classes, "no_weight_decay": list(no_weight_decay)})
        self.net = net
        if compile:
            # compiled at the first call; the module tree (and the state_dict keys) stay unchanged
            net.compile(**(compile if isinstance(compile, dict) else {}))
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.no_weight_decay = list(no_weight_decay)
        self.loss = nn.CrossEntropyLoss()
        self.acc = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", "val", "test")}
        )
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(
            True
        )  # in the checkpoint: a resumed run keeps the best of its first part
        self._batch_started = 0.0
        self._rng_to_restore: dict[str, Any] | None = None
        self.samples_seen = 0
        self.train_time = 0.0

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(**{k: v for k, v in batch.items() if k != "label"})

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        logits = self(batch)
        loss = self.loss(logits.float(), batch["label"])
        self.acc[f"{stage}_acc"](logits, batch["label"])
        size = batch["label"].shape[0]
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            sync_dist=not on_step,
        )
        self.log(
            f"{stage}/acc",
            self.acc[f"{stage}_acc"],
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
        )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.acc["val_acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    # ---- throughput -------------------------------------------------------------------------------------------------

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self._rng_to_restore is not None:  # resumed: dropout continues exactly where the saved run was
            set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        seconds = time.perf_counter() - self._batch_started
        samples = batch["label"].shape[0]
        tokens = int(batch["mask"].sum()) if "mask" in batch else batch["input"].numel()
        self.samples_seen += samples
        self.train_time += seconds
        self.log("train/samples_per_second", samples / seconds, on_step=True, on_epoch=False)
        self.log("train/tokens_per_second", tokens / seconds, on_step=True, on_epoch=False)

    def on_fit_start(self) -> None:
        counts = count_parameters(self.net)
        log.info("Parameters: %s", counts)
        for logger in self.loggers:
            logger.log_metrics({f"params/{k}": float(v) for k, v in counts.items()}, step=self.global_step)

    # ---- optimisation -----------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        groups = parameter_groups(self.net, weight_decay, self.no_weight_decay)
        optimizer = self.optimizer_factory(params=groups)
        for group in optimizer.param_groups:
            log.info(
                "param group %-8s tensors=%d params=%d lr=%g weight_decay=%g",
                group["name"],
                len(group["params"]),
                sum(p.numel() for p in group["params"]),
                group["lr"],
                group["weight_decay"],
            )
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    # ---- checkpoints ------------------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        reopen_stopped_epoch(checkpoint)  # last.ckpt of a run stopped mid-epoch resumes inside that epoch
        checkpoint["rng_states"] = rng_states()
        options = options_of(self.net)
        if options is not None:
            checkpoint["net_options"] = options
            checkpoint["net_class"] = net_class_name(self.net)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_model_options(checkpoint.get("net_options"), options_of(self.net), "to resume or evaluate it")
        reopen_stopped_epoch(checkpoint)  # checkpoints written before this version
        mine = self.state_dict()
        for name, tensor in checkpoint["state_dict"].items():
            if name in mine and mine[name].shape != tensor.shape:
                raise ValueError(
                    f"the checkpoint's {name} has shape {tuple(tensor.shape)} but this model has "
                    f"{tuple(mine[name].shape)}: it was trained with another model config"
                )
        self._keep_missing_metric_states(checkpoint["state_dict"], mine)
        # restored at the first training batch, after anything in between (sanity check, loaders) drew numbers
        self._rng_to_restore = checkpoint.get("rng_states")

    def _keep_missing_metric_states(
        self, saved: dict[str, torch.Tensor], mine: dict[str, torch.Tensor]
    ) -> None:
        """Checkpoints written before the best-so-far metrics were saved lack their states: keep the fresh ones."""
        metrics = [name for name, module in self.named_children() if isinstance(module, Metric)]
        missing = [k for k in mine if k not in saved and k.split(".")[0] in metrics]
        for key in missing:
            saved[key] = mine[key]
        if missing:
            log.warning("The checkpoint holds no %s: the best-so-far metrics restart from this run", missing)
