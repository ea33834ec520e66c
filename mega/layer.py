"""MEGA block: moving-average gated attention sub-layer, then the normalized FFN."""

from __future__ import annotations

import torch
from torch import nn

from mega.attention import MovingAverageGatedAttention
from mega.config import MegaConfig
from mega.ffn import NormalizedFeedForwardNetwork


class MegaBlock(nn.Module):
    """x ← MEGA(x); x ← NFFN(x)  (the NFFN is absent when use_normalized_ffn=False)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.attn = MovingAverageGatedAttention(config)
        self.ffn = NormalizedFeedForwardNetwork(config) if config.use_normalized_ffn else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn(x, mask)
        return x if self.ffn is None else self.ffn(x)
