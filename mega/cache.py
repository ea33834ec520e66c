"""Incremental-decoding state of a causal MEGA: what each layer must remember between calls.

Per layer the cache holds the EMA hidden state (fixed size, so each new token costs O(1) in the EMA), the keys,
values and key mask of the current attention chunk (or of the whole prefix without chunking), and the
cross-attention keys and values of the encoder states, computed once on the first call.
"""

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LayerCache:
    ema_state: Tensor | None = None  # [B, D, N]: h_t of the causal EMA after the last cached token
    keys: Tensor | None = None  # [B, n, z]: keys of the current chunk (whole prefix without chunking)
    values: Tensor | None = None  # [B, n, v]
    key_mask: Tensor | None = None  # [B, n] bool, True on real tokens
    cross_keys: Tensor | None = None  # [B, S, z]: projected encoder states
    cross_values: Tensor | None = None  # [B, S, D]


@dataclass
class DecoderCache:
    """Pass the same (initially empty) cache to successive calls; each call appends its tokens to it in place.

    `length` is the number of tokens consumed so far, i.e. the position of the next token.
    """

    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0

    def layer(self, index: int) -> LayerCache:
        while len(self.layers) <= index:
            self.layers.append(LayerCache())
        return self.layers[index]

    def select(self, batch_index: Tensor) -> "DecoderCache":
        """The cache of the sequences `batch_index` (e.g. to drop finished sequences or reorder beams)."""
        picked = [
            LayerCache(**{name: None if t is None else t.index_select(0, batch_index) for name, t in vars(c).items()})
            for c in self.layers
        ]
        return DecoderCache(picked, self.length)

    def __repr__(self) -> str:
        return f"DecoderCache(length={self.length}, layers={len(self.layers)})"


def append_keys(cache: LayerCache, keys: Tensor, values: Tensor, mask: Tensor | None) -> None:
    """Append new keys/values (and their mask, all-real when None) after the cached ones."""
    if mask is None:
        mask = torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device)
    if cache.keys is None:
        cache.keys, cache.values, cache.key_mask = keys, values, mask
    else:
        cache.keys = torch.cat([cache.keys, keys], dim=1)
        cache.values = torch.cat([cache.values, values], dim=1)
        cache.key_mask = torch.cat([cache.key_mask, mask], dim=1)
