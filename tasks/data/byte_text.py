"""The base of the two byte-level LRA tasks (Text, Retrieval): the tokeniser named by `data.tokenizer`, the
stand-in options and the int16 token cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from tasks.data.base import SequenceDataModule
from tasks.data.tokenizers import BYTE_VOCAB_SIZE, ByteTokenizer, CharTokenizer

log = logging.getLogger(__name__)


class ByteTextDataModule(SequenceDataModule):
    """`tokenizer` is `byte` (LRA) or `char` (s4's vocabulary, built from the train texts), tokens are cached as
    int16, and `standin` holds the stand-in generator's options (keys of `standin_defaults`).

    Hook for subclasses, besides the base's: `train_texts(folder)`, every text of the train split (the character
    vocabulary is built from them)."""

    HOOKS = SequenceDataModule.HOOKS | {"train_texts", "standin_defaults"}
    standin_defaults: dict[str, Any] = {}

    def __init__(
        self,
        tokenizer: str = "byte",
        char_min_freq: int = 15,
        standin: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if tokenizer not in ("byte", "char"):
            raise ValueError(
                f"data.tokenizer={tokenizer!r}: choose 'byte' (LRA) or 'char' (s4's character vocabulary)"
            )
        if tokenizer == "byte" and self.vocab_size != BYTE_VOCAB_SIZE:
            raise ValueError(
                f"data.vocab_size={self.vocab_size} but byte tokens need {BYTE_VOCAB_SIZE} (bytes + pad)"
            )
        unknown = set(standin or {}) - set(self.standin_defaults)
        if unknown:
            raise ValueError(
                f"data.standin has unknown options {sorted(unknown)}; known: {sorted(self.standin_defaults)}"
            )
        self.tokenizer_kind, self.char_min_freq = tokenizer, char_min_freq
        self.standin = {**self.standin_defaults, **dict(standin or {})}
        self._tokenizer: ByteTokenizer | CharTokenizer | None = None

    def train_texts(self, folder: Path) -> Iterator[str]:
        raise NotImplementedError(f"{type(self).__name__} must implement train_texts(folder)")

    def tokenizer(self, folder: Path) -> ByteTokenizer | CharTokenizer:
        """The tokeniser of `data.tokenizer` (the character vocabulary is built once, from `train_texts`)."""
        if self._tokenizer is None and self.tokenizer_kind == "byte":
            self._tokenizer = ByteTokenizer()
        elif self._tokenizer is None:
            self._tokenizer = CharTokenizer.build(self.train_texts(folder), self.char_min_freq, self.max_length)
            if self._tokenizer.vocab_size > self.vocab_size:
                raise ValueError(
                    f"the character vocabulary (char_min_freq={self.char_min_freq}) has {self._tokenizer.vocab_size} "
                    f"entries but data.vocab_size={self.vocab_size}: raise data.vocab_size or data.char_min_freq"
                )
            log.info("character vocabulary, %d entries: %s", self._tokenizer.vocab_size, self._tokenizer.itos)
        return self._tokenizer

    def synthetic_options(self) -> dict[str, Any]:
        return self.standin

    def token_options(self) -> dict[str, Any]:
        options = {"max_length": self.max_length, "tokenizer": self.tokenizer_kind}
        if self.tokenizer_kind == "char":
            options["char_min_freq"] = self.char_min_freq
        return options

    def features(self) -> datasets.Features:
        columns = super().features()
        for name in ("input", "input2"):
            if name in columns:
                columns[name] = datasets.Sequence(datasets.Value("int16"))  # ids < 32768: half of int32 on disk
        return columns
