"""Rotary positional embedding (RoPE, Su et al. 2021) of queries and keys, Megalodon's positions (paper App. C)."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """x ↦ x ⊙ cos(t ω) + rot(x) ⊙ sin(t ω), rot(a, b) = (−b, a) on the two halves, ω_i = base^(−2i/d).

    Position t counts from the start of each chunk (as the public code): q_t·k_s then depends on t − s only.
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"RoPE rotates pairs of features: the head width {dim} must be even")
        self.dim, self.base = dim, base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., C, d] (C positions along the second-to-last axis) → the rotated [..., C, d]."""
        half = self.dim // 2
        frequencies = self.base ** (-torch.arange(half, device=x.device, dtype=torch.float64) / half)
        angles = torch.arange(x.size(-2), device=x.device, dtype=torch.float64).unsqueeze(-1) * frequencies
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        first, second = x.split(half, dim=-1)
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
