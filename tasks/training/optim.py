"""Optimisation: fairseq's Adam, weight-decay parameter groups and the per-update learning-rate schedules.

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


def warmup(step: int, peak: float, warmup_steps: int, warmup_init_lr: float, warmup_power: float) -> float:
    """The warm-up of both schedules (fairseq's linear_decay): init + (peak - init) (t/W)^k for t < W."""
    return warmup_init_lr + (peak - warmup_init_lr) * (step / warmup_steps) ** warmup_power


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
        if step < warmup_steps:
            return warmup(step, peak, warmup_steps, warmup_init_lr, warmup_power)
        remaining = max(total_steps - step, 0) / max(total_steps - warmup_steps, 1)
        return end_lr + (peak - end_lr) * remaining  # lr = end + (peak - end) (T - t)/(T - W)

    return per_group_schedule(optimizer, lr_at)


def cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    warmup_init_lr: float = 1e-7,
    warmup_power: float = 1.0,
    end_lr: float = 0.0,
) -> LambdaLR:
    """The same warm-up as `linear_decay`, then one cosine half-period from each group's peak lr down to `end_lr`
    at `total_steps` (fairseq's `cosine` with `--min-lr end_lr` and a single period)."""

    def lr_at(step: int, peak: float) -> float:
        if step < warmup_steps:
            return warmup(step, peak, warmup_steps, warmup_init_lr, warmup_power)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return end_lr + (peak - end_lr) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )  # end + (peak-end)(1+cos πp)/2

    return per_group_schedule(optimizer, lr_at)


class FairseqAdam(torch.optim.AdamW):
    """fairseq's Adam (`--optimizer adam`, the paper's): torch's AdamW with epsilon added to sqrt(v) before the
    bias correction, as fairseq does, instead of after.

    fairseq: p <- p - lr·wd·p - lr·sqrt(1 - b2^t)/(1 - b1^t) · m/(sqrt(v) + eps); AdamW computes the same with
    m/(sqrt(v)/sqrt(1 - b2^t) + eps'), which is fairseq's update for eps' = eps/sqrt(1 - b2^t). So each step hands
    AdamW that eps' and leaves the rest (decoupled weight decay per param group, the for-loop, foreach and fused
    kernels, the state dict) to torch. `eps` in the param groups stays the configured value; each parameter's
    update count t is kept as a Python int in its state (`updates`), so reading it never waits for a device.
    """

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:  # the closure computes the gradients (Lightning clips them inside it)
            with torch.enable_grad():
                loss = closure()
        by_update: dict[int, list[torch.Tensor]] = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    t = self.state[param].get("updates", 0) + 1
                    by_update.setdefault(t, []).append(param)
        configured = [group["eps"] for group in self.param_groups]
        try:
            # one AdamW step per distinct t (one, unless some parameters had no gradient at some updates)
            for t, params in by_update.items():
                others = [p for u, ps in by_update.items() if u != t for p in ps]
                grads = [p.grad for p in others]
                for p in others:
                    p.grad = None
                for group, eps in zip(self.param_groups, configured):
                    group["eps"] = eps / math.sqrt(1 - group["betas"][1] ** t)
                super().step()
                for p, grad in zip(others, grads):
                    p.grad = grad
                for p in params:
                    self.state[p]["updates"] = t
        finally:
            for group, eps in zip(self.param_groups, configured):
                group["eps"] = eps
        return loss


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
