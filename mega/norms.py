"""Normalisation layers on [B, L, D] tensors: scalenorm, rmsnorm, layernorm, batchnorm, syncbatchnorm, plus-one."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5  # every norm of the reference uses 1e-5


def mean_square(x: torch.Tensor) -> torch.Tensor:
    """mean(x², -1) as [B, L, 1], accumulated in at least float32 (half inputs: no overflow, no lost digits)."""
    return x.square().mean(-1, keepdim=True, dtype=torch.promote_types(x.dtype, torch.float32))


class ScaleNorm(nn.Module):
    """y = g · x / sqrt(mean(x², -1) + eps) with one learned scalar g."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(mean_square(x) + EPS)  # [B, L, 1]
        if self.weight is not None:
            scale = scale * self.weight
        return (x * scale).to(x.dtype)  # keeps only x and the [B, L, 1] scale for the backward


class RMSNorm(nn.Module):
    """y = w ⊙ x / sqrt(mean(x², -1) + eps) with a per-channel weight w.

    discard_normalization reproduces the HF port's bug (it only returns w ⊙ x).
    """

    def __init__(self, dim: int, affine: bool = True, discard_normalization: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.discard_normalization = discard_normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype, statistic = x.dtype, mean_square(x)
        if self.weight is not None:
            x = x * self.weight
        if self.discard_normalization:
            return x.to(dtype)
        return (x * torch.rsqrt(statistic + EPS)).to(dtype)


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm over channels; statistics span (batch, time), padding included (as the reference)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class SequenceSyncBatchNorm(nn.SyncBatchNorm):
    """SyncBatchNorm over channels (multi-GPU Path-X); plain BatchNorm when not distributed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class PlusOneLayerNorm(nn.LayerNorm):
    """y = (γ + 1) ⊙ (x − µ) / σ + β with γ = β = 0 at start: weight decay pulls the scale to 1, not 0
    (Megalodon App. B.2)."""

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.zeros_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight + 1.0
        return F.layer_norm(x, self.normalized_shape, weight, self.bias, self.eps)


class PlusOneRMSNorm(nn.RMSNorm):
    """y = (γ + 1) ⊙ x / sqrt(mean(x², -1) + eps) with γ = 0 at start (Megalodon App. B.2)."""

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight + 1.0
        return F.rms_norm(x, self.normalized_shape, weight, self.eps)


def build_norm(
    kind: str, dim: int, affine: bool = True, rmsnorm_discards_normalization: bool = False
) -> nn.Module:
    """One norm instance of the given kind (names as MegaConfig.normalization_type)."""
    if kind == "scalenorm":
        return ScaleNorm(affine)
    if kind == "rmsnorm":
        return RMSNorm(dim, affine, rmsnorm_discards_normalization)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=EPS, elementwise_affine=affine)
    if kind == "batchnorm":
        return SequenceBatchNorm(dim, eps=EPS, affine=affine)
    if kind == "syncbatchnorm":
        return SequenceSyncBatchNorm(dim, eps=EPS, affine=affine)
    raise ValueError(
        f"unknown normalization_type {kind!r}; allowed: scalenorm, rmsnorm, layernorm, batchnorm, "
        "syncbatchnorm"
    )
