"""What `trainer.precision` needs beyond the Trainer's own handling."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins import MixedPrecision


def precision_arguments(trainer_cfg: Any) -> dict[str, Any]:
    """Extra Trainer arguments for `trainer.precision` ({} when Lightning handles it alone).

    Lightning replaces `16-mixed` on CPU by `bf16-mixed` (with a warning). torch's CPU autocast runs float16 and
    `torch.amp.GradScaler("cpu")` scales its gradients, so `16-mixed` on CPU gets that plugin instead: the same
    fp16 autocast and grad-scaler logic as on a GPU, testable without one.
    """
    accelerator = str(trainer_cfg.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if str(trainer_cfg.get("precision")) in ("16-mixed", "16") and on_cpu:
        return {"precision": None, "plugins": [MixedPrecision("16-mixed", "cpu")]}
    return {}
