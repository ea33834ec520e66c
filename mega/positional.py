"""Relative positional biases for the single-head attention: simple (Toeplitz) and rotary."""

from __future__ import annotations

import math

import torch
from torch import nn

from mega.config import MegaConfig


class SimpleRelativePositionalBias(nn.Module):
    """bias[i, j] = w[P − 1 + j − i] from a learned vector w of 2P − 1 entries (P = max positions or chunk)."""

    def __init__(self, max_positions: int) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.empty(2 * max_positions - 1))

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.weight, std=std)

    def forward(self, seq_len: int, first_query: int = 0) -> torch.Tensor:
        """[seq_len − first_query, seq_len]: the rows of queries first_query.. (decoding needs only the last)."""
        if seq_len > self.max_positions:
            raise ValueError(
                f"sequence (or chunk) length {seq_len} exceeds the simple relative bias size "
                f"{self.max_positions}: raise max_positions (or chunk_size when chunking), "
                "or use relative_positional_bias='rotary'"
            )
        positions = torch.arange(seq_len, device=self.weight.device)
        return self.weight[
            self.max_positions - 1 + positions.unsqueeze(0) - positions[first_query:].unsqueeze(1)
        ]


class RotaryRelativePositionalBias(nn.Module):
    """bias = rot(a) · rot(b)ᵀ with learned a, b ∈ R^z rotated by RoPE sinusoids (base 10000, half split)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"rotary bias needs an even shared_representation_size, got {dim}")
        self.dim = dim
        self.alpha = nn.Parameter(torch.empty(1, dim))
        self.beta = nn.Parameter(torch.empty(1, dim))

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.alpha, std=std)
        nn.init.normal_(self.beta, std=std)

    def rotate(self, vector: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        first, second = vector.chunk(2, dim=-1)  # [1, z/2] each, broadcast over positions
        return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)

    def forward(self, seq_len: int, first_query: int = 0) -> torch.Tensor:
        """[seq_len − first_query, seq_len]: the rows of queries first_query.. (decoding needs only the last)."""
        half = self.dim // 2
        frequencies = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / half))
        angles = torch.arange(seq_len, dtype=torch.float).unsqueeze(1) * frequencies.unsqueeze(0)
        sin, cos = angles.sin().to(self.alpha), angles.cos().to(self.alpha)
        queries = self.rotate(self.alpha, sin[first_query:], cos[first_query:])
        return queries @ self.rotate(self.beta, sin, cos).t()


def build_relative_bias(config: MegaConfig, span: int) -> nn.Module:
    """config.relative_positional_bias: 'simple' over `span` positions, or 'rotary' (any length)."""
    if config.relative_positional_bias == "simple":
        return SimpleRelativePositionalBias(span)
    return RotaryRelativePositionalBias(config.shared_representation_size)
