"""Training callbacks that guard a run: stop at the first non-finite loss or gradient, count fp16 skipped steps."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite: training on would only produce garbage."""


class NonFiniteCheck(L.Callback):
    """Checks every update, before the optimizer steps, that the gradients (and the losses behind them) are finite.

    - 32-true and bf16-mixed: a NaN/inf loss or gradient stops the run with NonFiniteError, naming the update, the
      precision and what to try, before the optimizer applies it.
    - 16-mixed: non-finite gradients with a finite loss are the grad scaler's business (it skips the update and
      halves its scale). Those skipped updates are counted, logged as `train/scaler_skipped_steps` (and
      `train/grad_scale`) and kept in checkpoints; `max_consecutive_skips` of them in a row stop the run.
      A non-finite loss (the forward itself overflowed, which no scale can fix) stops it at once.

    Costs one norm over the gradients per update (and one host-device synchronisation on GPU).
    """

    def __init__(self, max_consecutive_skips: int = 20) -> None:
        if max_consecutive_skips < 1:
            raise ValueError(
                f"callbacks.non_finite.max_consecutive_skips={max_consecutive_skips}: must be ≥ 1"
            )
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._loss_finite: torch.Tensor | None = None  # over the micro-batches of the current update

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = torch.isfinite(loss.detach()).all()  # stays on the device: read once per update
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        grads_finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if grads_finite:
            self.consecutive_skips = 0
            if scaler is not None:
                self._log(pl_module, scaler)
            return
        # gradients are all-reduced, so every rank gets here together; the loss may be bad on one rank only
        loss_bad = loss_finite is not None and not bool(loss_finite)
        loss_bad = bool(trainer.strategy.reduce_boolean_decision(loss_bad, all=False))
        if scaler is None or loss_bad:
            raise NonFiniteError(self._message(trainer, optimizer, loss_bad))
        self.skipped_steps += 1
        self.consecutive_skips += 1
        scale = float(scaler.get_scale())
        log.warning(
            "update %d: fp16 gradients overflowed; the grad scaler skips this update and halves its scale "
            "(%g → %g); skipped updates so far: %d",
            trainer.global_step + 1,
            scale,
            scale * scaler.get_backoff_factor(),
            self.skipped_steps,
        )
        self._log(pl_module, scaler)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise NonFiniteError(
                self._message(trainer, optimizer, loss_bad)
                + f" The grad scaler skipped {self.consecutive_skips} updates in a row (scale now {scale:g})."
            )

    def _log(self, pl_module: L.LightningModule, scaler: torch.amp.GradScaler) -> None:
        pl_module.log("train/scaler_skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)
        pl_module.log("train/grad_scale", float(scaler.get_scale()), on_step=True, on_epoch=False)

    @staticmethod
    def _message(trainer: L.Trainer, optimizer: torch.optim.Optimizer, loss_bad: bool) -> str:
        what = (
            "the loss is NaN or infinite"
            if loss_bad
            else "a gradient is NaN or infinite (the loss is finite)"
        )
        lrs = ", ".join(f"{group['lr']:.3g}" for group in optimizer.param_groups)
        precision = trainer.precision
        advice = (
            [f"trainer.precision=32-true for this task (now {precision})"] if precision != "32-true" else []
        )
        advice += [
            f"a lower optimizer.lr (the current lr is {lrs})",
            "a longer warm-up (scheduler.warmup_steps)",
            "gradient clipping (trainer.gradient_clip_val)",
        ]
        return (
            f"Stopped in update {trainer.global_step + 1} (trainer.global_step={trainer.global_step}, "
            f"precision {precision}): {what}, so this update was not applied. Try "
            + ", ".join(advice)
            + ". checkpoints/last.ckpt in the run dir holds the weights of the last checkpointed update."
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.consecutive_skips = int(state_dict["consecutive_skips"])
