"""Dropout and feature (channel) dropout, as the reference's FairseqDropout / FairseqFeatureDropout.

On CPU, element dropout draws its mask from 16-bit fields of 64-bit random words (about 3× cheaper than
`bernoulli_`) and keeps it as bool for the backward (a quarter of the float mask's memory). The drop
probability is then round(p·2^16)/2^16 (0.1 → 0.100006) and kept values are scaled by 1/(1 − that). Inside
torch.compile'd graphs (and off CPU) `Dropout.forward` is F.dropout. `Dropout.draw` only draws a seed of the mask (a
SeededMask), for the fused functions of mega.fused that apply it themselves and redraw it in the backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mega.amp import custom_bwd, custom_fwd

FIELDS = 1 << 16


def keep_mask(
    shape: torch.Size,
    p: float,
    device: torch.device,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """Mask of `dtype`, 1 (True) with probability 1 − round(p·2^16)/2^16, else 0."""
    count = shape.numel()
    words = torch.randint(
        -(2**63), 2**63 - 1, (-(-count // 4),), dtype=torch.int64, device=device, generator=generator
    )
    fields = words.view(torch.int16)[:count]  # uniform in [−2^15, 2^15)
    mask = torch.empty(count, dtype=dtype, device=device)
    return torch.ge(fields, round(p * FIELDS) - FIELDS // 2, out=mask).view(shape)


def kept_fraction(p: float) -> float:
    return 1.0 - round(p * FIELDS) / FIELDS


class MaskedScale(torch.autograd.Function):
    """y = x · keep / (1 − p), saving only the bool mask; in x's dtype, as F.dropout under autocast."""

    @staticmethod
    @custom_fwd
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return scaled_product(x, keep, scale)

    @staticmethod
    @custom_bwd
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return scaled_product(grad, keep, ctx.scale), None, None


def scaled_product(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """x · keep · scale: the bool mask multiplied as it is (no float copy of it), the scale in place on the product
    (one new tensor: fewer heap holes than the float mask's too)."""
    return torch.mul(x, keep).mul_(scale)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Element dropout in training (callers skip it in eval or when p = 0)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)  # fused kernels on accelerators and in compiled graphs
    return MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / kept_fraction(p))


@dataclass(frozen=True)
class SeededMask:
    """A dropout keep mask given by its seed: `mask()` draws the same bool mask each time (no mask is kept)."""

    seed: int
    shape: torch.Size
    p: float
    device: torch.device
    feature: bool = False

    def mask(self) -> torch.Tensor:
        generator = torch.Generator(self.device).manual_seed(self.seed)
        if not self.feature:
            return keep_mask(self.shape, self.p, self.device, generator)
        # channels of [B, L, D]; (sample, chunk) slices of [B, K, C, v], as Dropout.forward
        shape = (*self.shape[:2], 1, 1) if len(self.shape) == 4 else (self.shape[0], 1, self.shape[-1])
        keep = torch.empty(shape, dtype=torch.bool, device=self.device)
        return keep.bernoulli_(1.0 - self.p, generator=generator)


class Dropout(nn.Module):
    """Element dropout, or with feature=True channel dropout: a channel is dropped for every time step.

    On a 4-D chunked tensor [B, K, C, v] feature dropout drops whole (sample, chunk) slices, as the reference.
    """

    def __init__(self, p: float, feature: bool = False) -> None:
        super().__init__()
        self.p = p
        self.feature = feature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.feature:
            return dropout(x, self.p)
        if x.dim() == 4:
            return F.dropout2d(x, self.p, training=True)
        return F.dropout1d(x.transpose(1, 2), self.p, training=True).transpose(1, 2)

    def draw(self, shape: torch.Size, device: torch.device) -> tuple[SeededMask, float] | None:
        """A keep mask for a tensor of `shape` as a seed (drawn from the global RNG: seeded runs repeat) and the
        scale of kept values, for functions that apply the dropout themselves (mega.fused): they keep the seed,
        not the mask. None in eval or at p = 0."""
        if not self.training or self.p == 0.0:
            return None
        seed = int(torch.randint(0, 2**62, (1,)))
        scale = 1.0 / (1.0 - self.p) if self.feature else 1.0 / kept_fraction(self.p)
        return SeededMask(seed, shape, self.p, device, self.feature), scale

    def extra_repr(self) -> str:
        return f"p={self.p}, feature={self.feature}"
