"""Array caches for fixed-length inputs (pixels, audio): one `.npy` file per array, opened as a memory map.

Long real-valued sequences (CIFAR 1024, SC10 16000, Path-X 16384) are stored as their raw integer samples
(uint8 / int16) and turned into Contract-1 batches by a per-batch transform, so the cache stays small and the
normalisation can change without rebuilding it. Loaders read whole batches with one fancy index into the map
(a batch sampler), which is much faster than stacking rows one by one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

log = logging.getLogger(__name__)

META_FILE = "meta.json"


def save_arrays(folder: str | Path, arrays: dict[str, np.ndarray], meta: dict | None = None) -> Path:
    """Write `arrays` (name → array) and `meta` into `folder`, via a temporary folder renamed when complete."""
    folder = Path(folder)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(partial / f"{name}.npy", np.ascontiguousarray(array))
    (partial / META_FILE).write_text(json.dumps(meta or {}, indent=1, sort_keys=True))
    if folder.exists():  # another process finished first; theirs is identical (same key)
        shutil.rmtree(partial)
    else:
        partial.rename(folder)
    return folder


def arrays_ready(folder: str | Path) -> bool:
    return (Path(folder) / META_FILE).is_file()


def load_arrays(folder: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """(name → read-only memory map, meta) of a folder written by `save_arrays`."""
    folder = Path(folder)
    if not arrays_ready(folder):
        raise FileNotFoundError(f"{folder}: no array cache here; call the datamodule's prepare_data() first")
    arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
    return arrays, json.loads((folder / META_FILE).read_text())


class RowBatches(Dataset):
    """Rows `indices` of the arrays `names` in a cache folder; item i is a whole batch (a list of positions).

    The memory maps are opened lazily in each process, so DataLoader workers never pickle array contents.
    """

    def __init__(self, folder: str | Path, names: tuple[str, ...], indices: np.ndarray):
        self.folder = Path(folder)
        self.names = names
        self.indices = np.asarray(indices, dtype=np.int64)
        self._maps: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int]) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in self.names}
        rows = self.indices[positions]
        order = np.argsort(rows, kind="stable")  # ascending reads are kinder to the page cache
        restore = np.argsort(order, kind="stable")
        return {name: array[rows[order]][restore] for name, array in self._maps.items()}


def batch_loader(
    dataset: RowBatches,
    batch_size: int,
    shuffle: bool,
    transform: Callable[[dict[str, np.ndarray]], dict[str, torch.Tensor]],
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A DataLoader yielding `transform(batch of rows)`; shuffling is seeded when `seed` is given."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset,
        sampler=BatchSampler(order, batch_size, drop_last=drop_last),
        batch_size=None,
        collate_fn=transform,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class ArrayDataModule(L.LightningDataModule):
    """Datamodule whose cache is a folder of arrays: `input`, `label`, `split_{train,val,test}` row indices, and
    whatever else the task's transform needs (loaded whole in `setup`, e.g. normalisation statistics).

    Subclasses define `name`, `cache_options()` (what changes the arrays), `build()` and `batch_transform()`.
    """

    name = "task"
    row_arrays = ("input", "label")

    def __init__(
        self,
        data_dir: str,
        cache_dir: str | None = None,
        synthetic: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "cache"
        self.synthetic = synthetic
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.extras: dict[str, np.ndarray] = {}
        self.splits: dict[str, np.ndarray] = {}

    def cache_options(self) -> dict:
        return {"synthetic": self.synthetic}

    def build(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def batch_transform(self) -> Callable[[dict[str, np.ndarray]], dict[str, torch.Tensor]]:
        """Rows → Contract-1 batch; a picklable function (module-level, or a partial of one) for workers."""
        raise NotImplementedError

    @property
    def cache_folder(self) -> Path:
        options = json.dumps(self.cache_options(), sort_keys=True)
        return self.cache_dir / f"{self.name}-{hashlib.sha1(options.encode()).hexdigest()[:12]}"

    def prepare_data(self) -> None:
        if not arrays_ready(self.cache_folder):
            arrays = self.build()
            counts = {k[len("split_") :]: len(v) for k, v in arrays.items() if k.startswith("split_")}
            save_arrays(self.cache_folder, arrays, {"options": self.cache_options(), "counts": counts})
            log.info("%s: cached %s at %s", self.name, counts, self.cache_folder)

    def setup(self, stage: str | None = None) -> None:
        arrays, _ = load_arrays(self.cache_folder)
        others = {k: np.array(v) for k, v in arrays.items() if k not in self.row_arrays}
        self.splits = {k[len("split_") :]: v for k, v in others.items() if k.startswith("split_")}
        self.extras = {k: v for k, v in others.items() if not k.startswith("split_")}

    def _loader(self, split: str, train: bool) -> DataLoader:
        return batch_loader(
            RowBatches(self.cache_folder, self.row_arrays, self.splits[split]),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            transform=self.batch_transform(),
            num_workers=self.num_workers,
            seed=self.seed if train else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
