"""Base datamodule shared by every task: it owns the whole flow, a task fills in small hooks.

Flow (`prepare_data`, rank 0 only): **find** the raw files (or **download** them with `data.download=true`, or
**generate** them when the task has a generator) → **verify** the folder (`check_folder`) → **cache** the tokenised
splits under a key of the source files and the token options, written to a temporary folder and renamed when
complete → `setup` only **opens** the cache. Loaders yield Contract-1 batches (docs/architecture.md): `input`
`[B, L]`, `mask` `[B, L]` bool (only when something is padded), `label` `[B]`, and `input2`/`mask2` for
two-document tasks.

A task subclasses `SequenceDataModule` (or `tasks.data.arrays.ArrayDataModule` for fixed-length numeric inputs),
sets class attributes and implements hooks:

```python
class ListOpsDataModule(SequenceDataModule):
    task = "listops"                                        # names the cache and generated folders
    release_folders = ("listops-1000", "listops")           # folder names the release (or s4) uses
    split_files = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
    standin_description = "tiny generated expressions"      # the one stand-in notice (data.synthetic=true)

    def read_split(self, folder, split):                    # raw files -> examples, tokenised
        for line in ...: yield {"input": [3, 7, ...], "label": 4}

    def generate(self, folder, synthetic):                  # write raw files in the release format
        ...
```

Hooks (all optional except `read_split`):
- `read_split(folder, split)`: the examples of a split, `{"input": ids or values, "label": int[, "input2": ...]}`;
  errors name the file and line. The base truncates to `max_length` and counts what it cut.
- `generate(folder, synthetic)`: write raw files in the release format (`synthetic=True`: a small stand-in;
  `synthetic=False` only with `can_generate = True`, into `release_dir` or `generated_folder()`).
- `download_into(root)`: fetch the release into `root` in a layout the search finds (`data.download=true`).
- `has_source(folder)` / `check_folder(folder)`: does a folder hold this task's files / are they complete
  (default: any / every file of `split_files`); `check_folder` raises naming what is missing.
- `fallback_folders()`: places searched after the release layouts (e.g. Hugging Face hub snapshots).
- `source_files(folder)`: the files whose size and mtime key the cache (default: `split_files`).
- `token_options()`: options that change the tokens (part of the cache key; default `max_length`);
  `synthetic_options()`: options of the stand-in (name its folder); `features()`: Arrow column types.
- `transform(name, values)`: per-batch tensor transform after padding (e.g. pixel normalisation);
  `collate(examples)`: only where the batch extends Contract 1 (language modelling); `on_setup()`: after the cache
  is opened (e.g. tensors of normalisation statistics, a log line).

Where data is looked for (first folder that `has_source` wins), with `root` = `root_dir` (`paths.data_dir`):
`release_dir` and `release_dir/<name>` when `data.release_dir` is set, else `root/<name>`,
`root/lra_release/<name>`, `root/lra_release/lra_release/<name>` (the LRA archive unpacks to a doubled folder) for
each name in `release_folders`, then the generated folder, then `fallback_folders()`. With `synthetic=true` the raw
files are written by `generate(folder, synthetic=True)` under `root/synthetic/<task>-<hash>/` instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from tasks.data.loading import ResumableLoader, ResumableSampler, pad_sequences

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = 1  # bump when the cache layout or the base tokenisation changes
MAX_LISTED_FILES = 1000  # source files listed one by one in a cache key; more are summarised by a hash


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


def hub_snapshots(repos: Sequence[str], hub_cache: str | Path | None = None) -> list[Path]:
    """Snapshot folders of Hugging Face dataset repos in the hub cache (`datasets--<org>--<name>/snapshots/<rev>`),
    in the order of `repos`; `hub_cache` defaults to $HF_HUB_CACHE or ~/.cache/huggingface/hub."""
    if hub_cache is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_cache = HF_HUB_CACHE
    root = Path(hub_cache)
    return [s for repo in repos for s in sorted(root.glob(f"datasets--{repo.replace('/', '--')}/snapshots/*"))]


class SequenceDataModule(LightningDataModule):
    """Base datamodule; see the module docstring for the flow and the hooks a task implements.

    Args:
        root_dir: where data sets live (`paths.data_dir`); caches go to `<root_dir>/cache` unless `cache_dir`.
        release_dir: the folder holding this task's released files (or a folder above it); None: search root_dir.
        synthetic: a small stand-in data set instead (tests, smoke runs, demos), NOT the benchmark.
        download: fetch the release into root_dir when it is not found (where the task has a downloader).
        vocab_size, num_classes, input_kind, max_length, pad_id, dual_encoder: the facts the model reads.
        batch_size, eval_batch_size, num_workers, pin_memory, pad_to_multiple_of, seed: loading.
        data_dir: the old name of `release_dir` (deprecated).
    """

    # what a task may override (tests/tasks/test_base.py checks every datamodule): the class attributes below,
    # the hooks, and `__init__` for its own options
    HOOKS = frozenset(
        {
            "task", "release_folders", "split_files", "can_generate", "download_hint", "standin_description",
            "read_split", "generate", "download_into", "has_source", "check_folder", "fallback_folders",
            "generated_folder", "source_files", "token_options", "synthetic_options", "features", "transform",
            "on_setup", "collate",
        }
    )  # fmt: skip

    task: str = ""
    release_folders: tuple[str, ...] = ()
    split_files: dict[str, str] = {}
    can_generate: bool = False  # True when `generate(folder, synthetic=False)` produces the full data set
    download_hint: str = "see docs/data.md for where to get it"
    standin_description: str = "a small generated stand-in"

    def __init__(
        self,
        root_dir: str = "data",
        release_dir: str | None = None,
        cache_dir: str | None = None,
        synthetic: bool = False,
        download: bool = False,
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
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        if input_kind not in ("tokens", "real"):
            raise ValueError(f"data.input_kind must be 'tokens' or 'real', got {input_kind!r}")
        if pad_id != 0:
            raise ValueError(f"data.pad_id must be 0 (Contract 1: every LRA task pads with id 0), got {pad_id}")
        if data_dir is not None:
            if release_dir is not None and release_dir != data_dir:
                raise ValueError(
                    f"data.data_dir={data_dir} and data.release_dir={release_dir}: data_dir is the old name of "
                    "release_dir; set only data.release_dir"
                )
            message = "data.data_dir is deprecated: it is now called data.release_dir (same meaning)"
            warnings.warn(message, FutureWarning, stacklevel=2)
            log.warning(message)
            release_dir = data_dir
        self.root_dir = Path(root_dir)
        self.release_dir = Path(release_dir) if release_dir else None
        self.cache_root = Path(cache_dir) if cache_dir else self.root_dir / "cache"
        self.synthetic, self.download = synthetic, download
        self.vocab_size, self.num_classes, self.input_kind = vocab_size, num_classes, input_kind
        self.max_length, self.dual_encoder = max_length, dual_encoder
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.splits: dict[str, Any] = {}
        self._train_loader: ResumableLoader | None = None
        self._standin_said = False

    # ---- hooks for subclasses -------------------------------------------------------------------------------------

    def read_split(self, folder: Path, split: str) -> Iterable[dict[str, Any]]:
        """Yield the examples of `split` read from the raw files in `folder`: dicts with `input` (token ids or
        values), `label` (int) and, for two-document tasks, `input2`. Raise with file and line on bad input."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_split(folder, split)")

    def generate(self, folder: Path, synthetic: bool) -> None:
        """Write raw files in the release format into `folder` (which does not exist yet). `synthetic=True` asks
        for a small stand-in set; `synthetic=False` for the full data set (only with `can_generate = True`)."""
        raise NotImplementedError(f"{type(self).__name__} has no generator")

    def download_into(self, root: Path) -> None:
        """Fetch the released files into `root`, in a layout the search finds (`data.download=true`)."""
        raise FileNotFoundError(
            f"data.download=true: there is no downloader for {self.task} data. {self.download_hint}"
        )

    def has_source(self, folder: Path) -> bool:
        """Whether `folder` holds this task's raw files (complete or not: `check_folder` says what is missing)."""
        return any((folder / name).exists() for name in self.split_files.values())

    def check_folder(self, folder: Path) -> None:
        """Fail naming the first missing file of a folder that should hold the raw files."""
        for split, name in self.split_files.items():
            if not (folder / name).exists():
                raise FileNotFoundError(
                    f"{folder} has no {name} (the {split} split). Put the released file there, or point "
                    f"data.release_dir at the folder that holds {sorted(self.split_files.values())}."
                )

    def fallback_folders(self) -> list[Path]:
        """Places searched after the release layouts and the generated folder (default: none)."""
        return []

    def generated_folder(self) -> Path:
        """Where `generate(…, synthetic=False)` writes when the release is absent and `release_dir` is not set."""
        return self.root_dir / self.release_folders[0]

    def source_files(self, folder: Path) -> list[Path]:
        """The raw files whose size and mtime key the cache (default: the split files)."""
        return [folder / name for name in self.split_files.values()]

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

    def on_setup(self) -> None:
        """Called once the cache is open (`self.splits` is set)."""

    def collate(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Pad a list of examples into a Contract-1 batch."""
        batch: dict[str, torch.Tensor] = {}
        for name, mask_name in (("input", "mask"), ("input2", "mask2")):
            if name not in examples[0]:
                continue
            values, mask = pad_sequences([e[name] for e in examples], self.pad_to_multiple_of)
            batch[name] = self.transform(name, values.long() if self.input_kind == "tokens" else values.float())
            if mask is not None:
                batch[mask_name] = mask
        batch["label"] = torch.stack([e["label"] for e in examples]).long()
        return batch

    # ---- find, download or generate, verify -------------------------------------------------------------------------

    def candidate_folders(self) -> list[Path]:
        """Where the raw files may be, in search order."""
        if self.release_dir is not None:
            folders = [self.release_dir, *(self.release_dir / name for name in self.release_folders)]
        else:
            prefixes = [self.root_dir, self.root_dir / "lra_release", self.root_dir / "lra_release" / "lra_release"]
            folders = [prefix / name for name in self.release_folders for prefix in prefixes]
        if self.can_generate and self.generated_folder() not in folders:
            folders.append(self.generated_folder())  # written by an earlier run's generator
        return folders + [f for f in self.fallback_folders() if f not in folders]

    def _found(self) -> Path | None:
        for folder in self.candidate_folders():
            if folder.is_dir() and self.has_source(folder):
                self.check_folder(folder)
                return folder
        for folder in self.candidate_folders():
            if folder.is_dir():  # exists but holds none of the files: say what it lacks
                self.check_folder(folder)
        return None

    def raw_folder(self) -> Path:
        """Find (or download, or generate) the folder holding the raw files."""
        if self.synthetic:
            if not self._standin_said:
                log.warning(
                    "STAND-IN DATA (data.synthetic=true): %s runs on %s, NOT the benchmark; accuracies are not "
                    "comparable",
                    self.task,
                    self.standin_description,
                )
                self._standin_said = True
            folder = self.root_dir / "synthetic" / f"{self.task}-{options_hash(self.synthetic_options())}"
            if folder.exists() and not self.has_source(folder):  # written by an older version in another layout
                log.warning("The stand-in in %s is not in the current layout: writing it again", folder)
                shutil.rmtree(folder)
            if not folder.exists():
                log.info("Writing the %s stand-in to %s", self.task, folder)
                write_atomically(folder, lambda tmp: self.generate(tmp, synthetic=True))
            return folder
        found = self._found()
        if found is None and self.download:
            log.info("No %s data found: downloading it into %s (data.download=true)", self.task, self.root_dir)
            self.download_into(self.root_dir)
            found = self._found()
        if found is not None:
            return found
        searched = "\n  ".join(str(f) for f in self.candidate_folders())
        if not self.can_generate:
            raise FileNotFoundError(
                f"No {self.task} data found. Looked in:\n  {searched}\n{self.download_hint}. "
                "Set paths.data_dir (or the DATA_DIR environment variable) or data.release_dir, "
                "or pass data.synthetic=true for a small stand-in set."
            )
        folder = self.release_dir or self.generated_folder()
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
        """Everything that changes the cached tokens: the source files (path, size, mtime) and the token options."""
        files: dict[str, Any] = {}
        for path in self.source_files(folder):
            stat = path.stat()
            files[os.path.relpath(path, folder)] = [stat.st_size, stat.st_mtime_ns]
        if len(files) > MAX_LISTED_FILES:  # e.g. 50k IMDB reviews: keep meta.json small
            files = {"count": len(files), "sha1": options_hash(files)}
        return {
            "version": CACHE_VERSION,
            "task": self.task,
            "source": str(folder.resolve()),
            "files": files,
            **self.token_options(),
        }

    def cache_folder(self, folder: Path) -> Path:
        return self.cache_root / f"{self.task}-{options_hash(self.cache_key(folder))}"

    def write_cache(self, folder: Path, out: Path) -> None:
        """Tokenise every split of `folder` into the new cache folder `out` (Arrow tables, `meta.json`)."""
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
                    "%s/%s: truncated %d sequences to max_length=%d", self.task, split, truncated, self.max_length
                )
            splits[split] = datasets.Dataset.from_file(str(scratch))
            stats[split] = {"examples": count, "truncated": truncated}
        datasets.DatasetDict(splits).save_to_disk(str(out / "dataset"))
        for split in SPLITS:
            (out / f"{split}.arrow").unlink()
        (out / "meta.json").write_text(json.dumps({"key": self.cache_key(folder), "splits": stats}, indent=2))

    def open_cache(self, cache: Path) -> dict[str, Any]:
        """The splits of a cache folder written by `write_cache`, as indexable datasets of tensors."""
        stored = datasets.load_from_disk(str(cache / "dataset")).with_format("torch")
        return {split: stored[split] for split in SPLITS}

    def prepare_data(self) -> None:
        folder = self.raw_folder()
        cache = self.cache_folder(folder)
        if cache.exists():
            log.info("Using cached %s tokens in %s", self.task, cache)
            return
        log.info("Tokenising %s from %s into %s", self.task, folder, cache)
        write_atomically(cache, lambda tmp: self.write_cache(folder, tmp))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache = self.cache_folder(self.raw_folder())
        if not (cache / "meta.json").is_file():
            raise FileNotFoundError(f"{cache} is missing: call prepare_data() before setup()")
        self.splits = self.open_cache(cache)
        self.on_setup()

    # ---- loaders ----------------------------------------------------------------------------------------------------

    def _loader(self, dataset: Any, batch_size: int, sampler: Sampler) -> DataLoader:
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
