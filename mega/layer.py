"""MEGA block: moving-average gated attention sub-layer, (decoder) cross-attention, then the normalized FFN."""

from __future__ import annotations

import torch
from torch import nn

from mega.attention import MovingAverageGatedAttention
from mega.cache import LayerCache
from mega.config import MegaConfig
from mega.cross_attention import GatedCrossAttention
from mega.ffn import NormalizedFeedForwardNetwork


class MegaBlock(nn.Module):
    """x ← MEGA(x); x ← CrossAttn(x, memory) if add_cross_attention; x ← NFFN(x) if use_normalized_ffn."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.attn = MovingAverageGatedAttention(config)
        self.cross_attn = GatedCrossAttention(config) if config.add_cross_attention else None
        self.ffn = NormalizedFeedForwardNetwork(config) if config.use_normalized_ffn else None

    def reset_parameters(self) -> None:
        for sublayer in (self.attn, self.cross_attn, self.ffn):
            if sublayer is not None:
                sublayer.reset_parameters()

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ):
        """x: [B, L, D] → [B, L, D]; with need_weights → (x, self-attention weights, cross-attention weights).

        memory/memory_mask: encoder states [B, S, D] and their mask for cross-attention. cache: continue a causal
        sequence (see mega.cache); its length advances by L.
        """
        weights = cross_weights = None
        if need_weights:
            x, weights = self.attn(x, mask, cache, need_weights=True)
        else:
            x = self.attn(x, mask, cache)
        if self.cross_attn is not None:
            x, cross_weights = self.cross_attn(x, memory, memory_mask, cache, need_weights=True)
        if self.ffn is not None:
            x = self.ffn(x)
        if cache is not None:
            cache.length += x.size(1)
        return (x, weights, cross_weights) if need_weights else x
