"""Tokenisers of the byte-level tasks: LRA's byte rule (Text, Retrieval, text-file LMs) and s4's characters.

The byte rule is the one place where `id = byte + 1, 0 = padding` lives; pixel tokens (Image, Pathfinder with
`input_kind=tokens`) follow the same rule on grey values, so every 8-bit input has `BYTE_VOCAB_SIZE` ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

BYTE_VOCAB_SIZE = 257  # 256 byte values + padding (LRA's ByteTextEncoder)


def decode_bytes(raw: bytes) -> str:
    """Bytes to str without ever failing; `encode_bytes` gives the same bytes back (invalid UTF-8 included)."""
    return raw.decode("utf-8", errors="surrogateescape")


def encode_bytes(text: str) -> bytes:
    """The exact bytes of `text`: UTF-8, and undecodable input bytes restored as they were on disk."""
    return text.encode("utf-8", errors="surrogateescape")


class ByteTokenizer:
    """LRA's rule: id = UTF-8 byte + 1, pad 0, vocab 257, no BOS/EOS (the datamodule truncates to max_length)."""

    vocab_size = BYTE_VOCAB_SIZE

    def __call__(self, text: str | bytes) -> np.ndarray:
        data = encode_bytes(text) if isinstance(text, str) else text
        return np.frombuffer(data, dtype=np.uint8).astype(np.int16) + 1


def encode(text: str | bytes) -> list[int]:
    """Text (UTF-8) or bytes → token ids by the byte rule."""
    return ByteTokenizer()(text).tolist()


def decode(ids: Sequence[int]) -> str:
    """Token ids → text; padding is dropped and invalid UTF-8 shows as U+FFFD."""
    return bytes(i - 1 for i in ids if 0 < i < BYTE_VOCAB_SIZE).decode("utf-8", errors="replace")


CHAR_SPECIALS = ("<pad>", "<unk>", "<eos>")  # s4's specials, <pad> first so that pad id is 0


class CharTokenizer:
    """s4's character vocabulary: Unicode characters seen `min_freq` times in train, rarer ones -> <unk>, <eos> appended."""

    def __init__(self, chars: list[str], max_length: int):
        self.itos = list(CHAR_SPECIALS) + chars
        self.stoi = {c: i for i, c in enumerate(self.itos)}
        self.unk, self.eos = self.stoi["<unk>"], self.stoi["<eos>"]
        self.max_length = max_length
        self.vocab_size = len(self.itos)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int, max_length: int) -> CharTokenizer:
        counts = Counter()
        for text in texts:
            counts.update(text)
        kept = sorted((c for c, n in counts.items() if n >= min_freq), key=lambda c: (-counts[c], c))
        return cls(kept, max_length)

    def __call__(self, text: str) -> np.ndarray:
        ids = [self.stoi.get(c, self.unk) for c in text[: self.max_length - 1]] + [self.eos]
        return np.asarray(ids, dtype=np.int16)
