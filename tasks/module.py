"""The LightningModule shared by every task: cross-entropy classification of Contract-1 batches.

The network is built by Hydra from the `model:` config and passed in; the optimizer and scheduler come as partials
(`_partial_: true`), so a recipe lives entirely in YAML. Learning-rate schedules are per-update `LambdaLR`s.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lightning import LightningModule
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

log = logging.getLogger(__name__)

NO_DECAY_CHOICES = ("bias", "norm", "embedding")


def per_group_schedule(optimizer: torch.optim.Optimizer, lr_at: Callable[[int, float], float]) -> LambdaLR:
    """A LambdaLR stepping every update; `lr_at(step, peak)` gives the lr of a group whose configured lr is peak."""

    def factor(peak: float) -> Callable[[int], float]:
        return lambda step: lr_at(step, peak) / peak

    return LambdaLR(optimizer, [factor(group["lr"]) for group in optimizer.param_groups])


def linear_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_init_lr: float = 1e-7,
    warmup_power: float = 1.0,
    end_lr: float = 0.0,
) -> LambdaLR:
    """fairseq's `linear_decay`: lr rises from `warmup_init_lr` to each group's peak lr as (t/W)^power over
    W = `warmup_steps` updates, then falls linearly to `end_lr` at `total_steps`."""

    def lr_at(step: int, peak: float) -> float:
        if step < warmup_steps:  # lr = init + (peak - init) (t/W)^k
            return warmup_init_lr + (peak - warmup_init_lr) * (step / warmup_steps) ** warmup_power
        remaining = max(total_steps - step, 0) / max(total_steps - warmup_steps, 1)
        return end_lr + (peak - end_lr) * remaining  # lr = end + (peak - end) (T - t)/(T - W)

    return per_group_schedule(optimizer, lr_at)


def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_init_lr: float = 1e-7,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from `warmup_init_lr`, then cosine decay to `min_lr_ratio` × peak at `total_steps`."""

    def lr_at(step: int, peak: float) -> float:
        if step < warmup_steps:
            return warmup_init_lr + (peak - warmup_init_lr) * step / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return peak * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return per_group_schedule(optimizer, lr_at)


def parameter_groups(net: nn.Module, weight_decay: float, no_decay: list[str]) -> list[dict[str, Any]]:
    """Split parameters into a decayed group and one without decay for the `no_decay` kinds
    (bias, norm, embedding). With `no_decay=[]` every parameter decays, as in the official recipe."""
    unknown = set(no_decay) - set(NO_DECAY_CHOICES)
    if unknown:
        raise ValueError(
            f"module.no_weight_decay has unknown kinds {sorted(unknown)}; choose from {NO_DECAY_CHOICES}"
        )
    exempt: set[int] = set()
    for module in net.modules():
        kind = type(module).__name__.lower()
        for name, param in module.named_parameters(recurse=False):
            if (
                ("bias" in no_decay and name.endswith("bias"))
                or ("norm" in no_decay and "norm" in kind)
                or ("embedding" in no_decay and "embedding" in kind)
            ):
                exempt.add(id(param))
    params = [p for p in net.parameters() if p.requires_grad]
    decayed = [p for p in params if id(p) not in exempt]
    exempted = [p for p in params if id(p) in exempt]
    groups = [{"params": decayed, "weight_decay": weight_decay, "name": "decay"}]
    if exempted:
        groups.append({"params": exempted, "weight_decay": 0.0, "name": "no_decay"})
    return groups


def count_parameters(net: nn.Module) -> dict[str, int]:
    """{"total", "embedding"}: from the net's own `param_counts()` when it has one (Contract 2)."""
    if hasattr(net, "param_counts"):
        return dict(net.param_counts())
    embedding = sum(p.numel() for m in net.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    return {"total": sum(p.numel() for p in net.parameters()), "embedding": embedding}


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain types and tensors (loadable with weights_only=True)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Inverse of `rng_states`."""
    random.setstate(states["python"])
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def net_options(net: nn.Module) -> dict[str, Any] | None:
    """The options the net was built with, when it exposes them (`net.config.to_dict()` or a dataclass)."""
    config = getattr(net, "config", None)
    if config is None:
        return None
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    if hasattr(config, "__dataclass_fields__"):
        return {name: getattr(config, name) for name in config.__dataclass_fields__}
    return None


class SequenceClassifier(LightningModule):
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
        checkpoint["rng_states"] = rng_states()
        options = net_options(self.net)
        if options is not None:
            checkpoint["net_options"] = options

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved, current = checkpoint.get("net_options"), net_options(self.net)
        if saved is not None and current is not None:
            # dropout rates may change (e.g. evaluating or fine-tuning); every other option shapes the function
            differ = sorted(
                k
                for k in saved.keys() | current.keys()
                if saved.get(k) != current.get(k) and "dropout" not in k
            )
            if differ:
                details = ", ".join(
                    f"model.{k}: checkpoint {saved.get(k)!r} vs config {current.get(k)!r}" for k in differ
                )
                raise ValueError(
                    f"the checkpoint was trained with another model config ({details}); "
                    "use the same model options to resume or evaluate it"
                )
        mine = self.state_dict()
        for name, tensor in checkpoint["state_dict"].items():
            if name in mine and mine[name].shape != tensor.shape:
                raise ValueError(
                    f"the checkpoint's {name} has shape {tuple(tensor.shape)} but this model has "
                    f"{tuple(mine[name].shape)}: it was trained with another model config"
                )
        # restored at the first training batch, after anything in between (sanity check, loaders) drew numbers
        self._rng_to_restore = checkpoint.get("rng_states")
