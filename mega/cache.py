"""Incremental-decoding state of a causal MEGA: what each layer remembers between calls.

Per layer: the EMA hidden state (fixed size, so a new token costs O(1) in the EMA whatever came before), the
keys, values and key mask of the open attention chunk (of the whole prefix without chunking), and the
cross-attention keys and values of the encoder states, projected once on the first call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LayerCache:
    length: int = 0  # tokens this layer has consumed: the position of the next one
    ema_state: Tensor | None = None  # [B, D, N]: the causal EMA's h_t after the last token
    keys: Tensor | None = None  # [B, n, z]: keys of the open chunk (whole prefix without chunking)
    values: Tensor | None = None  # [B, n, v]
    key_mask: Tensor | None = None  # [B, n] bool, True on real tokens
    cross_keys: Tensor | None = None  # [B, S, z]: projected encoder states
    cross_values: Tensor | None = None  # [B, S, D]
    cross_mask: Tensor | None = None  # [B, S] bool, True on real encoder positions (None: all real)


@dataclass
class DecoderCache:
    """Pass one (initially empty) cache to successive calls of a causal model: each call appends its tokens.

    The cache is updated in place; `length` is the number of tokens consumed, i.e. the next token's position.
    """

    layers: list[LayerCache] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def layer(self, index: int) -> LayerCache:
        while len(self.layers) <= index:
            self.layers.append(LayerCache())
        return self.layers[index]

    def select(self, batch_index: Tensor) -> DecoderCache:
        """The cache of sequences `batch_index` only (to drop finished sequences or reorder beams)."""
        return DecoderCache(
            [
                dataclasses.replace(
                    layer,
                    **{
                        f.name: getattr(layer, f.name).index_select(0, batch_index)
                        for f in dataclasses.fields(layer)
                        if isinstance(getattr(layer, f.name), Tensor)
                    },
                )
                for layer in self.layers
            ]
        )


def append_keys(cache: LayerCache, keys: Tensor, values: Tensor, mask: Tensor | None) -> None:
    """Append new keys [B, n, z], values [B, n, v] and their mask [B, n] (None: all real) to the open chunk."""
    if mask is None:
        mask = torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device)
    if cache.keys is None:
        cache.keys, cache.values, cache.key_mask = keys, values, mask.bool()
    else:
        cache.keys = torch.cat([cache.keys, keys], dim=1)
        cache.values = torch.cat([cache.values, values], dim=1)
        cache.key_mask = torch.cat([cache.key_mask, mask.bool()], dim=1)
