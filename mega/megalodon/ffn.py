"""Megalodon's feed-forward sub-layer: pre-LayerNorm, SiLU or SwiGLU, and the two-hop residual (paper §3.4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega.dropout import Dropout
from mega.megalodon.config import MegalodonConfig
from mega.norms import PlusOneLayerNorm


class TwoHopFeedForward(nn.Module):
    """Y = X + Dropout(W₂ HiddenDropout(φ(LN(Ŷ)))),  φ(x) = SiLU(W₁x), or SwiGLU: SiLU(W₁x) ⊙ W₃x (Shazeer 2020).

    The residual X is the block's input, not Ŷ (eq. 11). LayerNorm with the plus-one scale (App. B.2).
    """

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.config = config
        dim, hidden = config.hidden_size, config.nffn_hidden_size
        self.norm = PlusOneLayerNorm(dim, eps=config.norm_eps, elementwise_affine=config.norm_affine)
        self.fc1 = nn.Linear(dim, hidden)
        self.gate = nn.Linear(dim, hidden) if config.ffn_activation == "swiglu" else None  # W₃
        self.fc2 = nn.Linear(hidden, dim)
        self.hidden_dropout = Dropout(config.nffn_activation_dropout_prob)
        self.dropout = Dropout(config.dropout_prob)

    def reset_parameters(self) -> None:
        for linear in (self.fc1, self.gate, self.fc2):
            if linear is not None:
                nn.init.normal_(linear.weight, std=self.config.initializer_range)
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """x: Ŷ [B, L, D] (the attention sub-layer's output), residual: the block input X [B, L, D]."""
        x = self.norm(x)
        hidden = F.silu(self.fc1(x))
        if self.gate is not None:
            hidden = hidden * self.gate(x)
        return residual + self.dropout(self.fc2(self.hidden_dropout(hidden)))
