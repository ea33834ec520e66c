"""Group norms along time on [B, L, D]: timestep norm (paper §3.2, causal) and group norm (App. C, classification).

Both normalise each group of d/k features with statistics over time and the group's features, and scale with
the plus-one parameterisation (App. B.2): y = (γ + 1) ⊙ x̂ + β, γ and β initialised at zero. Padded positions
(mask False) contribute nothing to the statistics.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class GroupMoments(NamedTuple):
    """Running statistics carried from one chunk of a sequence to the next (per sample and group)."""

    count: torch.Tensor  # [B]: elements seen (positions × features per group)
    mean: torch.Tensor  # [B, k]
    var: torch.Tensor  # [B, k]


class GroupedNorm(nn.Module):
    """The shared part: k groups of features and the plus-one affine map."""

    def __init__(self, dim: int, groups: int, affine: bool = True, eps: float = 1e-5) -> None:
        super().__init__()
        if dim % groups:
            raise ValueError(f"{dim} features do not split into {groups} groups: use a divisor of {dim}")
        self.dim, self.groups, self.eps = dim, groups, eps
        self.weight = nn.Parameter(torch.zeros(dim)) if affine else None  # γ: the scale is γ + 1
        self.bias = nn.Parameter(torch.zeros(dim)) if affine else None

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], mean/var broadcastable to [B, L, k] → (γ + 1) ⊙ (x − µ) / √(σ² + ε) + β."""
        grouped = x.unflatten(-1, (self.groups, -1))
        mean, var = mean.to(x.dtype).unsqueeze(-1), var.to(x.dtype).unsqueeze(-1)
        y = ((grouped - mean) * torch.rsqrt(var + self.eps)).flatten(-2)
        if self.weight is not None:
            y = torch.addcmul(self.bias, y, self.weight + 1.0)
        return y

    def group_sums(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Per position: (elements, Σx, Σx²) of each group, [B, L] and [B, L, k], in float64 (cumulative sums)."""
        grouped = x.to(torch.promote_types(x.dtype, torch.float32)).unflatten(-1, (self.groups, -1))
        sums, squares = grouped.sum(-1).double(), grouped.square().sum(-1).double()
        per_group = grouped.size(-1)
        if mask is None:
            count = x.new_full(x.shape[:2], per_group, dtype=torch.float64)
        else:
            keep = mask.to(torch.float64)
            count, sums, squares = keep * per_group, sums * keep.unsqueeze(-1), squares * keep.unsqueeze(-1)
        return count, sums, squares


class TimestepNorm(GroupedNorm):
    """µ_t = 1/(t·d_g) Σ_{i≤t} Σ_j x_{i,j},  σ²_t = 1/(t·d_g) Σ_{i≤t} Σ_j (x_{i,j} − µ_t)²  per group (eq. 4).

    Statistics are cumulative: position t sees positions ≤ t only, and `state` carries them across chunks, so a
    sequence normalised chunk by chunk equals the sequence normalised at once.
    """

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, state: GroupMoments | None = None
    ) -> tuple[torch.Tensor, GroupMoments]:
        """x: [B, L, D], mask: [B, L] bool (True = real) → (y [B, L, D], statistics after the last position)."""
        count, sums, squares = (t.cumsum(1) for t in self.group_sums(x, mask))
        if state is not None:
            prior = state.count.double().unsqueeze(-1)
            count = count + prior
            sums = sums + (prior * state.mean).unsqueeze(1)
            squares = squares + (prior * (state.var + state.mean.square())).unsqueeze(1)
        elements = count.clamp(min=1.0).unsqueeze(-1)  # positions before any real one: µ = σ² = 0
        mean = sums / elements
        var = (squares / elements - mean.square()).clamp(min=0.0)
        return self.normalize(x, mean, var), GroupMoments(count[:, -1], mean[:, -1], var[:, -1])


class SequenceGroupNorm(GroupedNorm):
    """µ, σ² over every real position and the group's features (Group Norm, Wu & He 2018), for classification."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L] bool (True = real) → [B, L, D]."""
        count, sums, squares = (t.sum(1) for t in self.group_sums(x, mask))
        elements = count.clamp(min=1.0).unsqueeze(-1)
        mean = sums / elements
        var = (squares / elements - mean.square()).clamp(min=0.0)
        return self.normalize(x, mean.unsqueeze(1), var.unsqueeze(1))
