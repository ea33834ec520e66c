"""Language modelling on text files: the byte-level datamodule (the module is `tasks.training.language_model`).

Tokens are bytes (`tasks.data.tokenizers`: id = byte + 1, 0 is padding), so any text or file works and vocab_size
is 257.
The files are read in order and joined with a newline; the byte stream is cut into train / val / test by
fractions (the last `val_fraction + test_fraction` of it, contiguous), and each split into blocks of `seq_len`
tokens that overlap by one, so that every next-token pair is predicted exactly once. LM batches extend
Contract 1: `input` [B, L] token ids, `mask` [B, L] (when the last block is short), `label` [B, L] = the input
with -100 at padding (the causal head shifts it: position t predicts label t + 1).
"""

from __future__ import annotations

import glob
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from mega.lm import IGNORE_INDEX
from tasks.data.base import SequenceDataModule
from tasks.data.loading import pad_sequences
from tasks.data.tokenizers import encode

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class TextFileDataModule(SequenceDataModule):
    """Byte-level LM data from text files (default: this project's README, docs and model code).

    Args:
        files: paths or glob patterns, relative to `base_dir`; each must match at least one file.
        base_dir: folder that relative `files` start from (None: the project root).
        seq_len: tokens per block (the model's max_positions must cover it without chunking).
        val_fraction, test_fraction: shares of the byte stream held out, taken from its end.
        **kwargs: the base datamodule's options (root_dir, cache_dir, batch_size, synthetic, ...).
    """

    task = "text_file"

    def __init__(
        self,
        files: Sequence[str] = ("README.md",),
        base_dir: str | None = None,
        seq_len: int = 256,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_length", seq_len)
        super().__init__(release_dir=str(base_dir or PROJECT_ROOT), **kwargs)
        if seq_len < 2:
            raise ValueError(f"data.seq_len={seq_len} must be >= 2 (a block predicts its tokens 2..seq_len)")
        if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                "> 0 and sum to less than 1"
            )
        if self.max_length < seq_len:
            raise ValueError(f"data.max_length={self.max_length} is shorter than data.seq_len={seq_len}")
        self.files = [files] if isinstance(files, str) else list(files)
        self.seq_len, self.val_fraction, self.test_fraction = seq_len, val_fraction, test_fraction

    # ---- where the text is -----------------------------------------------------------------------------------------

    standin_description = "seeded sentences over a tiny vocabulary"

    def has_source(self, folder: Path) -> bool:
        return True  # the files are checked by `check_folder`

    def check_folder(self, folder: Path) -> None:
        self.source_files(folder)

    def source_files(self, folder: Path) -> list[Path]:
        """The files to read, in order: each pattern's matches sorted; a pattern matching nothing is an error."""
        if self.synthetic:
            return [folder / "corpus.txt"]
        found: list[Path] = []
        for pattern in self.files:
            matches = sorted(
                Path(p) for p in glob.glob(str(folder / pattern), recursive=True) if Path(p).is_file()
            )
            if not matches:
                raise FileNotFoundError(
                    f"data.files: {pattern!r} matches no file under {folder} (data.base_dir); "
                    "give paths or glob patterns of text files"
                )
            found += [m for m in matches if m not in found]
        return found

    def generate(self, folder: Path, synthetic: bool) -> None:
        """A small stand-in text (seeded sentences over a tiny vocabulary) for tests and smoke runs."""
        words = "the model reads long sequences with a moving average and gated attention over chunks".split()
        rng = random.Random(self.seed)
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(400)]
        folder.mkdir(parents=True)
        (folder / "corpus.txt").write_text("\n".join(lines) + "\n")

    # ---- tokens --------------------------------------------------------------------------------------------------

    def token_options(self) -> dict[str, Any]:
        return {
            "seq_len": self.seq_len,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
        }

    def features(self) -> datasets.Features:
        return datasets.Features({"input": datasets.Sequence(datasets.Value("int32"))})

    def split_ids(self, folder: Path) -> dict[str, list[int]]:
        """The byte stream of all files cut into train / val / test (contiguous, held-out parts last)."""
        ids = encode(b"\n".join(f.read_bytes() for f in self.source_files(folder)))
        val_start = int(len(ids) * (1 - self.val_fraction - self.test_fraction))
        test_start = int(len(ids) * (1 - self.test_fraction))
        parts = {"train": ids[:val_start], "val": ids[val_start:test_start], "test": ids[test_start:]}
        for split, part in parts.items():
            if len(part) < 2:
                raise ValueError(
                    f"data.files give {len(ids)} bytes: the {split} split has {len(part)} (< 2) "
                    "tokens; add text or raise data.val_fraction / data.test_fraction"
                )
        return parts

    def read_split(self, folder: Path, split: str) -> Iterator[dict[str, Any]]:
        ids = self.split_ids(folder)[split]
        stride = self.seq_len - 1  # blocks overlap by one token: each next-token pair is predicted once
        for start in range(0, max(len(ids) - 1, 1), stride):
            yield {"input": ids[start : start + self.seq_len]}

    def collate(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        tokens, mask = pad_sequences([e["input"] for e in examples], self.pad_to_multiple_of)
        tokens = tokens.long()
        batch = {
            "input": tokens,
            "label": tokens if mask is None else tokens.masked_fill(~mask, IGNORE_INDEX),
        }
        if mask is not None:
            batch["mask"] = mask
        return batch
