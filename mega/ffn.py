"""Normalized feed-forward network (NFFN)."""

from __future__ import annotations

import torch
from torch import nn

from mega.activations import ACTIVATIONS
from mega.config import MegaConfig
from mega.dropout import Dropout
from mega.fused import drop, dropout_draw, recomputed
from mega.norms import build_norm


class NormalizedFeedForwardNetwork(nn.Module):
    """y = x + Dropout(W₂ HiddenDropout(act(W₁ x̃))), x̃ = Norm(x) if prenorm; Norm(y) if postnorm."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.config = config
        self.prenorm = config.normalize_before_ffn
        self.activation = ACTIVATIONS[config.activation]
        self.norm = build_norm(
            config.normalization_type,
            config.hidden_size,
            config.norm_affine,
            config.rmsnorm_discards_normalization,
        )
        self.fc1 = nn.Linear(config.hidden_size, config.nffn_hidden_size)
        self.fc2 = nn.Linear(config.nffn_hidden_size, config.hidden_size)
        self.hidden_dropout = Dropout(config.nffn_activation_dropout_prob, config.use_feature_dropout)
        self.dropout = Dropout(config.dropout_prob, config.use_feature_dropout)

    def reset_parameters(self) -> None:
        for linear in (self.fc1, self.fc2):
            nn.init.normal_(linear.weight, std=self.config.initializer_range)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        if self.prenorm:
            x = self.norm(x)
        hidden_in = self.fc1(x)
        # W₂'s input HiddenDropout(act(W₁ x̃)) is recomputed in the backward from W₁ x̃ and the bool mask
        x = recomputed(
            self.hidden(),
            hidden_in,
            *dropout_draw(self.hidden_dropout, hidden_in),
            weight=self.fc2.weight,
            bias=self.fc2.bias,
        )
        x = self.dropout(x) + residual
        return x if self.prenorm else self.norm(x)

    def hidden(self):
        """The chain HiddenDropout(act(hidden_in))."""

        def chain(hidden_in: torch.Tensor, keep: torch.Tensor | None, scale: float) -> torch.Tensor:
            return drop(self.activation(hidden_in), keep, scale)

        return chain
