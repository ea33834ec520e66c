"""Optimisation: weight-decay parameter groups and the per-update learning-rate schedules of the recipes.

Schedules are `LambdaLR`s stepped every update (`interval: step`), built from `conf/scheduler/*.yaml` as partials
that receive the optimizer and the trainer's number of updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

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
