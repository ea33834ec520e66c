"""Square 8-bit grey images as sequences (LRA Image and Pathfinder/Path-X): the shared input rule.

The array cache keeps raw uint8 pixels `[N, side²]` in row-major order; every batch is turned into the model's
input here, so switching `input_kind` or `pool` reuses the cache:
- `input_kind=real`: floats (p/255 − pixel_mean)/pixel_std;
- `input_kind=tokens`: ids p + 1 in 1..256, 0 = padding (LRA feeds discrete pixels; the byte rule, vocab 257);
- `pool=p`: the mean of each p×p block first (S4's option), sequences of (side/p)².
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.data.arrays import ArrayDataModule
from tasks.data.tokenizers import BYTE_VOCAB_SIZE


class PixelDataModule(ArrayDataModule):
    """An `ArrayDataModule` of `side`×`side` grey images; see the module docstring for the input rule."""

    def __init__(self, side: int, pixel_mean: float, pixel_std: float, pool: int = 1, **kwargs: Any) -> None:
        if pool < 1 or side % pool:
            raise ValueError(f"data.pool={pool}: must be a divisor of the image side {side}")
        length = (side // pool) ** 2
        super().__init__(**{"input_kind": "real", "vocab_size": BYTE_VOCAB_SIZE, "max_length": length, **kwargs})
        if self.max_length != length:
            pooled = f", pooled {pool}×{pool} (data.pool)," if pool > 1 else ""
            raise ValueError(
                f"data.max_length={self.max_length}, but {side}×{side} {self.task} images{pooled} are sequences of "
                f"{length}: set data.max_length={length}"
            )
        if self.input_kind == "tokens" and self.vocab_size != BYTE_VOCAB_SIZE:
            raise ValueError(
                f"data.vocab_size={self.vocab_size}: pixel tokens are 1..256 (0 = padding), set {BYTE_VOCAB_SIZE}"
            )
        self.side, self.pool = side, pool
        self.pixel_mean, self.pixel_std = pixel_mean, pixel_std

    def transform(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Grey values 0..255 (pooled) → normalised floats, or token ids 1..256."""
        if self.pool > 1:
            side, p = self.side // self.pool, self.pool
            pooled = values.float().view(-1, side, p, side, p).mean(dim=(2, 4)).flatten(1)
            values = pooled.round().long() if self.input_kind == "tokens" else pooled
        if self.input_kind == "tokens":
            return values + 1
        scale = 1.0 / (255.0 * self.pixel_std)  # (p/255 − mean)/std as one multiply and one in-place subtract
        return (values * scale).sub_(self.pixel_mean / self.pixel_std)
