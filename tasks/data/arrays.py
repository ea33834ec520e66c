"""Array cache for fixed-length numeric inputs (pixels, audio samples): `.npy` files opened as memory maps.

An `ArrayDataModule` is a `SequenceDataModule` (same data locations, stand-in folders, cache keys, atomic writes,
resumable loaders, collate and `transform` hook) whose cache is a folder of arrays instead of Arrow tables:

    input.npy        [N, L] raw integer samples (uint8 pixels, int16 audio): small, normalised per batch
    label.npy        [N] int64
    split_{train,val,test}.npy   row indices of each split
    <other>.npy      whatever `transform` needs (e.g. normalisation statistics), loaded whole in `setup`
    meta.json        the cache key, the split sizes and label ranges, each array's shape and dtype, each file's
                     size and SHA-256 (checked when the cache is opened: `SequenceDataModule.check_cache`)

A subclass implements `read_arrays(folder, out)` instead of `read_split`. Rows are read from the memory map one example
at a time, so 16,000-sample clips never pass through Python lists and workers share the page cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.data.base import SPLITS, DamagedCache, SequenceDataModule, read_meta, value_span

log = logging.getLogger(__name__)

ROW_ARRAYS = ("input", "label")


class ArrayRows(Dataset):
    """Examples `indices` of a cache folder's `input` / `label` arrays; the maps open lazily in each process,
    so DataLoader workers never pickle array contents."""

    def __init__(self, folder: Path, indices: np.ndarray) -> None:
        self.folder = folder
        self.indices = np.asarray(indices, dtype=np.int64)
        self._maps: dict[str, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self._maps is None:
            self._maps = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in ROW_ARRAYS}
        row = self.indices[i]
        return {
            "input": torch.from_numpy(np.array(self._maps["input"][row])),
            "label": torch.tensor(int(self._maps["label"][row])),
        }


class ArrayDataModule(SequenceDataModule):
    """Base for tasks cached as arrays; see the module docstring. Its storage replaces the base's Arrow tables:
    `write_cache` saves what `read_arrays` returns, `open_cache` maps it back (extras in `self.extras`)."""

    HOOKS = (SequenceDataModule.HOOKS - {"read_split", "features"}) | {"read_arrays"}

    def read_arrays(self, folder: Path, out: Path) -> dict[str, np.ndarray]:
        """Raw files in `folder` → `input`, `label`, `split_{train,val,test}` and any extra arrays. `out` is the
        cache folder being written (it exists): a large array may be written there directly as `<name>.npy`
        (e.g. with `np.lib.format.open_memmap`) and returned as that memmap; it is not copied again."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_arrays(folder, out)")

    def write_cache(self, folder: Path, out: Path) -> None:
        out.mkdir(parents=True)
        arrays = self.read_arrays(folder, out)
        missing = [k for k in (*ROW_ARRAYS, *(f"split_{s}" for s in SPLITS)) if k not in arrays]
        if missing:
            raise ValueError(f"{type(self).__name__}.read_arrays returned no {missing}")
        for name, array in arrays.items():
            target = out / f"{name}.npy"
            if isinstance(array, np.memmap) and target.exists() and target.samefile(array.filename):
                array.flush()
            else:
                np.save(out / f"{name}.npy", np.ascontiguousarray(array))
        counts = {split: len(arrays[f"split_{split}"]) for split in SPLITS}
        for split, count in counts.items():
            if count == 0:
                raise ValueError(f"the {split} split read from {folder} is empty")
        labels = np.asarray(arrays["label"])
        splits = {
            split: {"examples": counts[split], "labels": value_span(labels[arrays[f"split_{split}"]])}
            for split in SPLITS
        }
        shapes = {name: {"shape": list(a.shape), "dtype": str(a.dtype)} for name, a in arrays.items()}
        self.write_meta(folder, out, splits, arrays=shapes)
        log.info(
            "%s: cached %s examples of length %d from %s", self.task, counts, arrays["input"].shape[1], folder
        )

    def open_cache(self, cache: Path) -> dict[str, ArrayRows]:
        recorded = read_meta(cache).get("arrays", {})
        for name, record in recorded.items():
            try:
                array = np.load(cache / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError) as error:
                raise DamagedCache(f"{name}.npy cannot be read ({error})") from None
            if [list(array.shape), str(array.dtype)] != [record["shape"], record["dtype"]]:
                raise DamagedCache(
                    f"{name}.npy is {array.dtype} {list(array.shape)}, {record['dtype']} {record['shape']} when written"
                )
        others = {p.stem: np.load(p) for p in sorted(cache.glob("*.npy")) if p.stem not in ROW_ARRAYS}
        self.extras = {k: v for k, v in others.items() if not k.startswith("split_")}
        return {split: ArrayRows(cache, others[f"split_{split}"]) for split in SPLITS}
