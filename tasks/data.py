"""Base datamodule shared by every task: locate the released files, cache tokenised splits, batch with masks.

A task subclasses `SequenceDataModule`, sets three class attributes and implements `read_split` (and `generate`
when it can write stand-in or generated data):

```python
class ListOpsDataModule(SequenceDataModule):
    task = "listops"                                        # names the cache and generated folders
    release_folders = ("listops-1000", "listops")           # folder names the release (or s4) uses
    split_files = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}

    def read_split(self, folder, split):                    # raw files -> examples, tokenised
        for line in ...: yield {"input": [3, 7, ...], "label": 4}

    def generate(self, folder, synthetic):                  # write raw files in the release format
        ...
```

Flow (`prepare_data`, rank 0 only): find the raw folder → generate it if allowed and absent → tokenise every split
through `read_split` (truncating to `max_length`, counting what was cut) into an Arrow cache written to a
temporary folder and renamed when complete. `setup` only opens the cache. Loaders yield Contract-1 batches:
`input` `[B, L]`, `mask` `[B, L]` bool (only when something is padded), `label` `[B]`, and `input2`/`mask2` for
two-document tasks.

Hooks a subclass may override besides `read_split`/`generate`:
- `token_options()`: the options that change the tokens (part of the cache key; default `max_length`);
- `features()`: Arrow column types (default int32 tokens or float32 values, int64 label);
- `transform(name, values)`: per-batch tensor transform after padding (e.g. pixel normalisation; default none).

Where data is looked for (first match wins), with `root` = `paths.data_dir`:
`data_dir` if set explicitly, else for each name in `release_folders`: `root/name`, `root/lra_release/name`,
`root/lra_release/lra_release/name` (the archive unpacks to a doubled folder). With `synthetic=true` the raw
files are written by `generate(folder, synthetic=True)` under `root/synthetic/<task>-<hash>/` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 1  # bump when the cache layout or the base tokenisation changes


def options_hash(options: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable dict (cache and folder keys)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def write_atomically(final: Path, write: Any) -> None:
    """Call `write(tmp_folder)`, then rename the folder to `final`; a crash leaves no half-written `final`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        if final.exists():  # another process finished first: keep its copy
            log.info("%s appeared while writing; keeping the existing copy", final)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ResumableSampler(Sampler[int]):
    """Seeded shuffling whose position survives a checkpoint: epoch e uses permutation(seed + e), and a resumed
    run skips the batches the checkpointed run had already trained on. Shards by rank under DDP."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        self.num_examples, self.batch_size, self.seed, self.shuffle = num_examples, batch_size, seed, shuffle
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch already trained on (counted by the datamodule)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch, self.batches_done = epoch, 0

    def _rank_and_world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_examples, generator=generator).tolist()
        else:
            order = list(range(self.num_examples))
        rank, world = self._rank_and_world()
        return order[rank::world]

    def __iter__(self) -> Iterator[int]:
        yield from self._indices()[self.batches_done * self.batch_size :]

    def __len__(self) -> int:
        # the full epoch, also on a resumed one: Lightning keeps counting batch_idx from where it stopped
        rank, world = self._rank_and_world()
        return len(range(rank, self.num_examples, world))


class ResumableLoader(DataLoader):
    """A DataLoader whose sampler position Lightning saves in and restores from checkpoints."""

    sampler: ResumableSampler

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.sampler.epoch,
            "batches_done": self.sampler.batches_done,
            "seed": self.sampler.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.epoch, self.sampler.batches_done = state["epoch"], state["batches_done"]
        self.sampler.seed = state["seed"]


def pad_sequences(
    sequences: list[torch.Tensor], multiple_of: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad to the longest sequence (rounded up to `multiple_of`) with zeros; mask is None if nothing padded."""
    lengths = [len(s) for s in sequences]
    length = max(lengths)
    if multiple_of:
        length = -(-length // multiple_of) * multiple_of
    padded = sequences[0].new_zeros((len(sequences), length))
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for i, sequence in enumerate(sequences):
        padded[i, : len(sequence)] = sequence
        mask[i, : len(sequence)] = True
    return padded, (None if bool(mask.all()) else mask)


class SequenceDataModule(LightningDataModule):
    """Base datamodule; see the module docstring for the hooks a task implements."""

    task: str = ""
    release_folders: tuple[str, ...] = ()
    split_files: dict[str, str] = {}
    download_hint: str = "see the README section 'Data' for where to get it"

    def __init__(
        self,
        root_dir: str = "data",
        data_dir: str | None = None,
        cache_dir: str | None = None,
        synthetic: bool = False,
        vocab_size: int | None = None,
        num_classes: int = 2,
        input_kind: str = "tokens",
        max_length: int = 1024,
        pad_id: int = 0,
        dual_encoder: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        pad_to_multiple_of: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if input_kind not in ("tokens", "real"):
            raise ValueError(f"data.input_kind must be 'tokens' or 'real', got {input_kind!r}")
        if pad_id != 0:
            raise ValueError(
                f"data.pad_id must be 0 (Contract 1: every LRA task pads with id 0), got {pad_id}"
            )
        self.root_dir = Path(root_dir)
        self.data_dir = Path(data_dir) if data_dir else None
        self.cache_root = Path(cache_dir) if cache_dir else self.root_dir / "cache"
        self.synthetic = synthetic
        self.vocab_size, self.num_classes, self.input_kind = vocab_size, num_classes, input_kind
        self.max_length, self.dual_encoder = max_length, dual_encoder
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.splits: dict[str, datasets.Dataset] = {}
        self._train_loader: ResumableLoader | None = None

    # ---- hooks for subclasses -------------------------------------------------------------------------------------

    def read_split(self, folder: Path, split: str) -> Iterable[dict[str, Any]]:
        """Yield the examples of `split` read from the raw files in `folder`: dicts with `input` (token ids or
        values), `label` (int) and, for two-document tasks, `input2`. Raise with file and line on bad input."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_split(folder, split)")

    def generate(self, folder: Path, synthetic: bool) -> None:
        """Write raw files in the release format into `folder` (which does not exist yet). `synthetic=True` asks
        for a small stand-in set for tests; `synthetic=False` for the full data set when the task can generate it
        (set `can_generate = True`)."""
        raise NotImplementedError(f"{type(self).__name__} has no generator")

    can_generate: bool = False  # True when `generate(folder, synthetic=False)` produces the full data set

    def token_options(self) -> dict[str, Any]:
        """Options that change the tokens; their hash keys the cache."""
        return {"max_length": self.max_length}

    def synthetic_options(self) -> dict[str, Any]:
        """Options of the stand-in generator; their hash names the synthetic folder."""
        return {}

    def features(self) -> datasets.Features:
        """Arrow column types of the cache."""
        value = datasets.Value("int32" if self.input_kind == "tokens" else "float32")
        columns = {"input": datasets.Sequence(value), "label": datasets.Value("int64")}
        if self.dual_encoder:
            columns["input2"] = datasets.Sequence(value)
        return datasets.Features(columns)

    def transform(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Per-batch transform of a padded input column (`input` or `input2`); default: unchanged."""
        return values

    # ---- locating and generating raw files --------------------------------------------------------------------------

    def candidate_folders(self) -> list[Path]:
        """Where the raw files may be, in search order."""
        if self.data_dir is not None:
            return [self.data_dir]
        prefixes = [
            self.root_dir,
            self.root_dir / "lra_release",
            self.root_dir / "lra_release" / "lra_release",
        ]
        folders = [prefix / name for name in self.release_folders for prefix in prefixes]
        if self.can_generate and self.generated_folder() not in folders:
            folders.append(self.generated_folder())  # written by an earlier run's generator
        return folders

    def check_folder(self, folder: Path) -> None:
        """Fail naming the first missing split file of an existing folder."""
        for split, name in self.split_files.items():
            if not (folder / name).exists():
                raise FileNotFoundError(
                    f"{folder} has no {name} (the {split} split). Put the released file there, or point "
                    f"data.data_dir at the folder that holds {sorted(self.split_files.values())}."
                )

    def generated_folder(self) -> Path:
        """Where `generate(…, synthetic=False)` writes when the release is absent and `data_dir` is not set."""
        return self.root_dir / self.release_folders[0]

    def raw_folder(self) -> Path:
        """Find (or generate) the folder holding the raw split files."""
        if self.synthetic:
            folder = self.root_dir / "synthetic" / f"{self.task}-{options_hash(self.synthetic_options())}"
            if not folder.exists():
                log.info("Writing synthetic %s data to %s", self.task, folder)
                write_atomically(folder, lambda tmp: self.generate(tmp, synthetic=True))
            return folder
        for folder in self.candidate_folders():
            if folder.is_dir():
                self.check_folder(folder)
                return folder
        searched = "\n  ".join(str(f) for f in self.candidate_folders())
        if not self.can_generate:
            raise FileNotFoundError(
                f"No {self.task} data found. Looked in:\n  {searched}\n{self.download_hint}. "
                "Set paths.data_dir (or the DATA_DIR environment variable) or data.data_dir, "
                "or pass data.synthetic=true for a small stand-in set."
            )
        folder = self.data_dir or self.generated_folder()
        log.warning(
            "No %s data found (looked in: %s); generating it into %s with our generator",
            self.task,
            ", ".join(str(f) for f in self.candidate_folders()),
            folder,
        )
        write_atomically(folder, lambda tmp: self.generate(tmp, synthetic=False))
        return folder

    # ---- cache ----------------------------------------------------------------------------------------------------

    def cache_key(self, folder: Path) -> dict[str, Any]:
        """Everything that changes the cached tokens: source files (path, size, mtime) and token options."""
        files = {}
        for name in self.split_files.values():
            stat = (folder / name).stat()
            files[name] = [stat.st_size, stat.st_mtime_ns]
        return {
            "version": CACHE_VERSION,
            "task": self.task,
            "source": str(folder.resolve()),
            "files": files,
            **self.token_options(),
        }

    def cache_folder(self, folder: Path) -> Path:
        return self.cache_root / f"{self.task}-{options_hash(self.cache_key(folder))}"

    def _write_cache(self, folder: Path, out: Path) -> None:
        features = self.features()
        out.mkdir(parents=True)
        splits, stats = {}, {}
        for split in SPLITS:
            truncated = 0
            scratch = out / f"{split}.arrow"
            writer = datasets.arrow_writer.ArrowWriter(features=features, path=str(scratch))
            count = 0
            for example in self.read_split(folder, split):
                for name in ("input", "input2"):
                    if name in example and len(example[name]) > self.max_length:
                        example[name] = example[name][: self.max_length]
                        truncated += 1
                writer.write(example)
                count += 1
            writer.finalize()
            if count == 0:
                raise ValueError(f"the {split} split read from {folder} is empty")
            if truncated:
                log.info(
                    "%s/%s: truncated %d sequences to max_length=%d",
                    self.task,
                    split,
                    truncated,
                    self.max_length,
                )
            splits[split] = datasets.Dataset.from_file(str(scratch))
            stats[split] = {"examples": count, "truncated": truncated}
        datasets.DatasetDict(splits).save_to_disk(str(out / "dataset"))
        for split in SPLITS:
            (out / f"{split}.arrow").unlink()
        (out / "meta.json").write_text(json.dumps({"key": self.cache_key(folder), "splits": stats}, indent=2))

    def prepare_data(self) -> None:
        folder = self.raw_folder()
        cache = self.cache_folder(folder)
        if cache.exists():
            log.info("Using cached %s tokens in %s", self.task, cache)
            return
        log.info("Tokenising %s from %s into %s", self.task, folder, cache)
        write_atomically(cache, lambda tmp: self._write_cache(folder, tmp))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache = self.cache_folder(self.raw_folder())
        if not cache.exists():
            raise FileNotFoundError(f"{cache} is missing: call prepare_data() before setup()")
        stored = datasets.load_from_disk(str(cache / "dataset")).with_format("torch")
        self.splits = {split: stored[split] for split in SPLITS}

    # ---- loaders ----------------------------------------------------------------------------------------------------

    def collate(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad a list of examples into a Contract-1 batch."""
        batch: dict[str, torch.Tensor] = {}
        for name, mask_name in (("input", "mask"), ("input2", "mask2")):
            if name not in examples[0]:
                continue
            values, mask = pad_sequences([e[name] for e in examples], self.pad_to_multiple_of)
            batch[name] = self.transform(
                name, values.long() if self.input_kind == "tokens" else values.float()
            )
            if mask is not None:
                batch[mask_name] = mask
        batch["label"] = torch.stack([e["label"] for e in examples]).long()
        return batch

    def _loader(self, dataset: datasets.Dataset, batch_size: int, sampler: Sampler) -> DataLoader:
        loader_class = ResumableLoader if isinstance(sampler, ResumableSampler) else DataLoader
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.collate,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),  # keeps loader seeding off the global RNG
        )

    def train_dataloader(self) -> DataLoader:
        if self._train_loader is None:
            sampler = ResumableSampler(len(self.splits["train"]), self.batch_size, self.seed, shuffle=True)
            self._train_loader = self._loader(self.splits["train"], self.batch_size, sampler)
        return self._train_loader

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self.splits[split]
        return self._loader(dataset, self.eval_batch_size, torch.utils.data.SequentialSampler(dataset))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # count trained batches here (not in the sampler): loaders and Lightning prefetch ahead of training
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.sampler.batches_done += 1
        return batch
