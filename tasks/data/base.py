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
- `source_files(folder)`: the files (paths or strings) whose size and mtime key the cache (default: `split_files`).
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
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from tasks.data.loading import ResumableLoader, ResumableSampler, pad_sequences
from tasks.data.processes import process_alive

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CACHE_VERSION = (
    2  # bump when the cache layout or the base tokenisation changes (2: meta.json records its files)
)
MAX_LISTED_FILES = 1000  # source files listed one by one in a cache key; more are summarised by a hash
SMALL_FILE = (
    16 * 2**20
)  # cache files up to this size (labels, splits, statistics) are checksummed at every setup
VERIFY_LEVELS = (
    "quick",
    "full",
)  # data.verify_cache: sizes, shapes and small files / also every big file's SHA-256
TEMPORARY = re.compile(
    r"\.(?P<name>.+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}"
)  # write_atomically's folders


class DamagedCache(Exception):
    """A cache folder whose files differ from what its meta.json recorded when it was written."""


def options_hash(options: dict[str, Any]) -> str:
    """Short stable hash of a JSON-serialisable dict (cache and folder keys)."""
    text = json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(8 * 2**20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_records(folder: Path) -> dict[str, dict[str, Any]]:
    """{path relative to `folder`: {"size", "sha256"}} of every file below it but meta.json (what setup checks)."""
    return {
        str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "meta.json"
    }


def value_span(values: Any, span: list[int] | None = None) -> list[int] | None:
    """[min, max] of integer `values` (a list, bytes or an array) widened by `span`; `span` when empty."""
    if len(values) == 0:
        return span
    if isinstance(values, np.ndarray):
        low, high = int(values.min()), int(values.max())
    else:
        low, high = int(min(values)), int(max(values))
    return [low, high] if span is None else [min(span[0], low), max(span[1], high)]


def read_meta(cache: Path) -> dict[str, Any]:
    """A cache folder's meta.json; DamagedCache when it is missing, unreadable or from before it listed its files."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
    except FileNotFoundError:
        raise DamagedCache(
            "it has no meta.json: its writing was interrupted, or the file was deleted"
        ) from None
    except ValueError:
        raise DamagedCache("its meta.json is not valid JSON") from None
    if "files" not in meta:
        raise DamagedCache("its meta.json lists no files (written by an older version)")
    return meta


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporary folders of `write_atomically` in `folder` whose writer no longer runs (a run killed
    while writing), each one logged. The owner (machine and process id) is in the name; folders of another
    machine (a shared file system) are left alone, and folders of an older version, without an owner, are named."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(".*.tmp-*")):
        owner = TEMPORARY.fullmatch(path.name)
        if owner is None:
            log.warning(
                "%s is a temporary folder of an older version whose writer is unknown: delete it when no run is "
                "writing %s",
                path,
                folder,
            )
        elif owner["host"] == socket.gethostname() and not process_alive(int(owner["pid"])):
            log.warning(
                "Removing %s: left by process %s, which no longer runs (it stopped while writing %s)",
                path,
                owner["pid"],
                owner["name"],
            )
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def write_atomically(final: Path, write: Any) -> None:
    """Call `write(tmp_folder)`, then rename the folder to `final`; a crash leaves no half-written `final`.

    The temporary folder, `.<name>.tmp-<host>-<pid>-<random>`, names its writer, so that a later call removes
    those of killed writers (`remove_stale_temporaries`) and never those of a writer still at work."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tmp = final.parent / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        if final.exists():  # another process finished first: keep its copy
            log.info("%s appeared while writing; keeping the existing copy", final)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def labels_sha256(table: datasets.Dataset) -> str:
    """SHA-256 of an Arrow split's label column as int64 (cheap: one column, read at every setup)."""
    labels = table.data.column("label").to_numpy().astype(np.int64)
    return hashlib.sha256(labels.tobytes()).hexdigest()


def hub_snapshots(repos: Sequence[str], hub_cache: str | Path | None = None) -> list[Path]:
    """Snapshot folders of Hugging Face dataset repos in the hub cache (`datasets--<org>--<name>/snapshots/<rev>`),
    in the order of `repos`; `hub_cache` defaults to $HF_HUB_CACHE or ~/.cache/huggingface/hub."""
    if hub_cache is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_cache = HF_HUB_CACHE
    root = Path(hub_cache)
    return [
        s for repo in repos for s in sorted(root.glob(f"datasets--{repo.replace('/', '--')}/snapshots/*"))
    ]


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
        verify_cache: str = "quick",
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        if verify_cache not in VERIFY_LEVELS:
            raise ValueError(f"data.verify_cache={verify_cache!r}: choose one of {', '.join(VERIFY_LEVELS)}")
        if input_kind not in ("tokens", "real"):
            raise ValueError(f"data.input_kind must be 'tokens' or 'real', got {input_kind!r}")
        if pad_id != 0:
            raise ValueError(
                f"data.pad_id must be 0 (Contract 1: every LRA task pads with id 0), got {pad_id}"
            )
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
        self.verify_cache = verify_cache
        self.splits: dict[str, Any] = {}
        self._train_loader: ResumableLoader | None = None
        self._prepared: Path | None = None  # the cache folder prepare_data found or wrote
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

    def source_files(self, folder: Path) -> list[Path | str]:
        """The raw files whose size and mtime key the cache (default: the split files); strings are fine (cheaper
        than Paths for 200k files)."""
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
            batch[name] = self.transform(
                name, values.long() if self.input_kind == "tokens" else values.float()
            )
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
            prefixes = [
                self.root_dir,
                self.root_dir / "lra_release",
                self.root_dir / "lra_release" / "lra_release",
            ]
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
            if folder.exists() and not self.has_source(
                folder
            ):  # written by an older version in another layout
                log.warning("The stand-in in %s is not in the current layout: writing it again", folder)
                shutil.rmtree(folder)
            if not folder.exists():
                log.info("Writing the %s stand-in to %s", self.task, folder)
                write_atomically(folder, lambda tmp: self.generate(tmp, synthetic=True))
            return folder
        found = self._found()
        if found is None and self.download:
            log.info(
                "No %s data found: downloading it into %s (data.download=true)", self.task, self.root_dir
            )
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
        prefix = str(folder) + os.sep
        for path in map(str, self.source_files(folder)):
            name = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, folder)  # 200k: fast
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # listed but absent: the key says so, the reader names it when caching
                files[name] = None
                continue
            files[name] = [stat.st_size, stat.st_mtime_ns]
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
            count, labels, tokens = 0, None, None
            for example in self.read_split(folder, split):
                for name in ("input", "input2"):
                    if name in example and len(example[name]) > self.max_length:
                        example[name] = example[name][: self.max_length]
                        truncated += 1
                    if name in example and self.input_kind == "tokens":
                        tokens = value_span(example[name], tokens)
                if "label" in example:
                    labels = value_span([example["label"]], labels)
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
            stats[split] = {"examples": count, "truncated": truncated, "labels": labels, "tokens": tokens}
            if labels is not None:
                stats[split]["labels_sha256"] = labels_sha256(splits[split])
        datasets.DatasetDict(splits).save_to_disk(str(out / "dataset"))
        for split in SPLITS:
            (out / f"{split}.arrow").unlink()
        self.write_meta(folder, out, stats)

    def write_meta(self, folder: Path, out: Path, splits: dict[str, Any], **extra: Any) -> None:
        """meta.json of a new cache: its key, per split what was cached (examples, label and token ranges), and
        every file's size and SHA-256 (what `check_cache` compares)."""
        meta = {"key": self.cache_key(folder), "splits": splits, **extra, "files": file_records(out)}
        (out / "meta.json").write_text(json.dumps(meta, indent=2))

    def check_cache(self, cache: Path) -> dict[str, Any]:
        """The meta.json of a cache folder, once its files are what was written: each file exists with its size;
        small files and, with `data.verify_cache=full`, every file have their SHA-256 (DamagedCache otherwise).
        Cached labels and tokens outside `num_classes` / `vocab_size` are a config error (ValueError)."""
        meta = read_meta(cache)
        for name, record in meta["files"].items():
            path = cache / name
            if not path.is_file():
                raise DamagedCache(f"{name} is missing")
            size = path.stat().st_size
            if size != record["size"]:
                raise DamagedCache(f"{name} has {size} bytes, {record['size']} when it was written")
            if (size <= SMALL_FILE or self.verify_cache == "full") and file_sha256(path) != record["sha256"]:
                raise DamagedCache(f"the contents of {name} changed since it was written (SHA-256)")
        for split, stats in meta["splits"].items():
            for what, span, limit, option in (
                ("labels", stats.get("labels"), self.num_classes, "num_classes"),
                ("tokens", stats.get("tokens"), self.vocab_size, "vocab_size"),
            ):
                if span and limit is not None and not 0 <= span[0] <= span[1] < limit:
                    raise ValueError(
                        f"the {split} {what} cached in {cache} range over {span[0]}..{span[1]}, but "
                        f"data.{option}={limit} allows 0..{limit - 1}: fix data.{option} (or the data)"
                    )
        return meta

    def open_cache(self, cache: Path) -> dict[str, Any]:
        """The splits of a cache folder written by `write_cache`, as indexable datasets of tensors; DamagedCache
        when their rows or labels differ from what meta.json recorded."""
        meta = read_meta(cache)
        try:
            stored = datasets.load_from_disk(str(cache / "dataset"))
        except (OSError, ValueError) as error:
            raise DamagedCache(f"its Arrow tables cannot be read ({error})") from None
        for split in SPLITS:
            stats = meta["splits"][split]
            if len(stored[split]) != stats["examples"]:
                raise DamagedCache(f"{split} has {len(stored[split])} rows, {stats['examples']} when written")
            if stats.get("labels_sha256") and labels_sha256(stored[split]) != stats["labels_sha256"]:
                raise DamagedCache(f"the {split} labels changed since they were written")
        stored = stored.with_format("torch")
        return {split: stored[split] for split in SPLITS}

    def prepare_data(self) -> None:
        remove_stale_temporaries(self.cache_root)
        folder = self.raw_folder()
        cache = self._prepared = self.cache_folder(folder)
        if cache.exists():
            try:
                self.check_cache(cache)
                self.open_cache(cache)
                log.info("Using cached %s tokens in %s", self.task, cache)
                return
            except DamagedCache as damage:
                log.warning(
                    "The %s cache %s is damaged (%s): deleting it and building it again",
                    self.task,
                    cache,
                    damage,
                )
                shutil.rmtree(cache)
        log.info("Tokenising %s from %s into %s", self.task, folder, cache)
        write_atomically(cache, lambda tmp: self.write_cache(folder, tmp))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        # the key prepare_data just computed in this process (keying 200k Pathfinder images takes seconds)
        cache = self._prepared or self.cache_folder(self.raw_folder())
        if not cache.is_dir():
            raise FileNotFoundError(f"{cache} is missing: call prepare_data() before setup()")
        try:
            self.check_cache(cache)
            self.splits = self.open_cache(cache)
        except DamagedCache as damage:
            raise ValueError(
                f"The {self.task} cache {cache} is damaged ({damage}): delete that folder; the next run builds it "
                "again"
            ) from None
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
