"""Dropout and feature (channel) dropout, as the reference's FairseqDropout / FairseqFeatureDropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
            return F.dropout(x, self.p, training=True)
        if x.dim() == 4:
            return F.dropout2d(x, self.p, training=True)
        return F.dropout1d(x.transpose(1, 2), self.p, training=True).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"p={self.p}, feature={self.feature}"
