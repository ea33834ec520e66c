"""Language modelling on text files: a byte-level datamodule and the LightningModule (perplexity, samples).

Tokens are bytes: id = byte + 1, 0 is padding (Contract 1), so any text or file works and vocab_size is 257.
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
from torch import nn
from torchmetrics import MinMetric
from torchmetrics.text import Perplexity

from tasks.data import CACHE_VERSION, SPLITS, SequenceDataModule, pad_sequences
from tasks.module import SequenceClassifier

log = logging.getLogger(__name__)

VOCAB_SIZE = 257  # padding + 256 byte values
IGNORE_INDEX = -100
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def encode(text: str | bytes) -> list[int]:
    """Text (UTF-8) or bytes → token ids (byte + 1)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return [byte + 1 for byte in data]


def decode(ids: Sequence[int]) -> str:
    """Token ids → text; padding is dropped and invalid UTF-8 shows as U+FFFD."""
    return bytes(i - 1 for i in ids if 0 < i <= 256).decode("utf-8", errors="replace")


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
        super().__init__(**kwargs)
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
        self.base_dir = Path(base_dir) if base_dir else PROJECT_ROOT
        self.seq_len, self.val_fraction, self.test_fraction = seq_len, val_fraction, test_fraction

    # ---- where the text is -----------------------------------------------------------------------------------------

    def raw_folder(self) -> Path:
        return super().raw_folder() if self.synthetic else self.base_dir

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

    def cache_key(self, folder: Path) -> dict[str, Any]:
        files = {
            str(f.resolve()): [f.stat().st_size, f.stat().st_mtime_ns] for f in self.source_files(folder)
        }
        return {"version": CACHE_VERSION, "task": self.task, "files": files, **self.token_options()}

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


class LanguageModel(SequenceClassifier):
    """Next-token cross-entropy on LM batches; logs loss, perplexity and next-token accuracy per stage; samples
    text from the model when training ends (logged, and written to `<run dir>/samples.txt`).

    The optimizer groups, schedules, checkpoint checks, resume state and throughput logging are the
    classification module's (tasks.module.SequenceClassifier); `num_classes` is the vocabulary size.

    Args:
        sample_prompts: texts to continue at the end of training ([] for none).
        sample_tokens: bytes generated per prompt.
        temperature, top_k: sampling options of MegaForCausalLM.generate.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        num_classes: int = VOCAB_SIZE,
        no_weight_decay: Sequence[str] = (),
        sample_prompts: Sequence[str] = (),
        sample_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 20,
        sample_seed: int = 0,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, num_classes, no_weight_decay, compile)
        self.perplexity = nn.ModuleDict({f"{s}_ppl": Perplexity(ignore_index=IGNORE_INDEX) for s in SPLITS})
        self.val_ppl_best = MinMetric()
        self.sample_prompts, self.sample_tokens = list(sample_prompts), sample_tokens
        self.temperature, self.top_k, self.sample_seed = temperature, top_k, sample_seed

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        labels = batch["label"]
        out = self.net(batch["input"], attention_mask=batch.get("mask"), labels=labels)
        logits, targets = out.logits[:, :-1], labels[:, 1:]
        predicted = targets != IGNORE_INDEX
        tokens = int(predicted.sum())
        self.acc[f"{stage}_acc"](logits[predicted], targets[predicted])
        self.perplexity[f"{stage}_ppl"](logits.float(), targets)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            out.loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=tokens,
            sync_dist=not on_step,
        )
        self.log(f"{stage}/acc", self.acc[f"{stage}_acc"], on_step=on_step, on_epoch=True, batch_size=tokens)
        self.log(
            f"{stage}/ppl",
            self.perplexity[f"{stage}_ppl"],
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=tokens,
        )
        return out.loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        self.val_ppl_best(self.perplexity["val_ppl"].compute())
        self.log("val/ppl_best", self.val_ppl_best.compute(), prog_bar=True, sync_dist=True)

    def on_fit_end(self) -> None:
        if not self.sample_prompts or not self.trainer.is_global_zero:
            return
        generator = torch.Generator(device=self.device).manual_seed(self.sample_seed)
        samples = []
        for prompt in self.sample_prompts:
            ids = torch.tensor([encode(prompt)], device=self.device)
            with torch.compiler.set_stance("force_eager"):  # token-by-token shapes: compiling would not pay
                out = self.net.generate(
                    ids,
                    self.sample_tokens,
                    do_sample=True,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    generator=generator,
                )
            samples.append(decode(out[0].tolist()))
        text = "\n\n".join(
            f"--- sample {i + 1} (prompt {p!r}) ---\n{s}"
            for i, (p, s) in enumerate(zip(self.sample_prompts, samples))
        )
        log.info("Samples after training (temperature %g, top_k %s):\n%s", self.temperature, self.top_k, text)
        out_dir = Path(self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "samples.txt").write_text(text + "\n")
