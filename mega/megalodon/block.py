"""A Megalodon layer: normalized attention sub-layer, then the feed-forward sub-layer, two-hop residual (§3.4)."""

from __future__ import annotations

import torch
from torch import nn

from mega.megalodon.attention import NormalizedAttention
from mega.megalodon.config import MegalodonConfig
from mega.megalodon.ffn import TwoHopFeedForward


class MegalodonBlock(nn.Module):
    """Ŷ = Attention(Norm(X)) + X;  Y = FFN(LayerNorm(Ŷ)) + X  (eq. 11: pre-norm with two-hop residual)."""

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.attn = NormalizedAttention(config)
        self.ffn = TwoHopFeedForward(config)

    def reset_parameters(self) -> None:
        self.attn.reset_parameters()
        self.ffn.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L] bool (True = real) → [B, L, D]."""
        return self.ffn(self.attn(x, mask), residual=x)
