"""Array cache for fixed-length numeric inputs (pixels, audio samples): `.npy` files opened as memory maps.

An `ArrayDataModule` is a `SequenceDataModule` (same data locations, stand-in folders, cache keys, atomic writes,
resumable loaders, collate and `transform` hook) whose cache is a folder of arrays instead of Arrow tables:

    input.npy        [N, L] raw integer samples (uint8 pixels, int16 audio): small, normalised per batch
    label.npy        [N] int64
    split_{train,val,test}.npy   row indices of each split
    <other>.npy      whatever `transform` needs (e.g. normalisation statistics), loaded whole in `setup`
    meta.json        the cache key and the split sizes

A subclass implements `read_arrays(folder)` instead of `read_split`. Rows are read from the memory map one example
at a time, so 16,000-sample clips never pass through Python lists and workers share the page cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.data import SPLITS, SequenceDataModule

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
    """Base for tasks cached as arrays; see the module docstring."""

    def read_arrays(self, folder: Path) -> dict[str, np.ndarray]:
        """Raw files in `folder` → `input`, `label`, `split_{train,val,test}` and any extra arrays."""
        raise NotImplementedError(f"{type(self).__name__} must implement read_arrays(folder)")

    def source_files(self, folder: Path) -> list[Path]:
        """The raw files whose size and mtime key the cache (default: the split files)."""
        return [folder / name for name in self.split_files.values()]

    def cache_key(self, folder: Path) -> dict:
        files = {
            str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in self.source_files(folder)
        }
        return {**super().cache_key(folder), "files": files}

    def _write_cache(self, folder: Path, out: Path) -> None:
        arrays = self.read_arrays(folder)
        missing = [k for k in (*ROW_ARRAYS, *(f"split_{s}" for s in SPLITS)) if k not in arrays]
        if missing:
            raise ValueError(f"{type(self).__name__}.read_arrays returned no {missing}")
        out.mkdir(parents=True)
        for name, array in arrays.items():
            np.save(out / f"{name}.npy", np.ascontiguousarray(array))
        counts = {split: len(arrays[f"split_{split}"]) for split in SPLITS}
        for split, count in counts.items():
            if count == 0:
                raise ValueError(f"the {split} split read from {folder} is empty")
        (out / "meta.json").write_text(
            json.dumps({"key": self.cache_key(folder), "splits": counts}, indent=2)
        )
        log.info(
            "%s: cached %s examples of length %d from %s", self.task, counts, arrays["input"].shape[1], folder
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache = self.cache_folder(self.raw_folder())
        if not (cache / "meta.json").is_file():
            raise FileNotFoundError(f"{cache} is missing: call prepare_data() before setup()")
        others = {p.stem: np.load(p) for p in sorted(cache.glob("*.npy")) if p.stem not in ROW_ARRAYS}
        self.extras = {k: v for k, v in others.items() if not k.startswith("split_")}
        self.splits = {split: ArrayRows(cache, others[f"split_{split}"]) for split in SPLITS}


def measure_throughput(experiment: str, overrides: list[str], batches: int = 50, steps: int = 3) -> dict:
    """Training-loader samples/s (wall clock, and per CPU-second of this process) against the model's
    training-step samples/s (forward, backward, AdamW step), for an experiment composed as `train.py` would.
    The datamodule is prepared first (caching is not timed); with num_workers=0 the loader runs in this process."""
    import time

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import train  # noqa: F401  (registers the config resolvers)

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose("config", overrides=[f"experiment={experiment}", *overrides])
    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg.torch_threads)  # as train.py
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    loader = iter(datamodule.train_dataloader())
    first = next(loader)  # worker start-up is not throughput
    started, cpu_started, samples = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        samples += len(next(loader)["label"])
    loader_rate = samples / (time.perf_counter() - started)
    loader_cpu_rate = samples / (time.process_time() - cpu_started)  # per CPU-second: less sensitive to load

    result = {
        "experiment": experiment,
        "overrides": " ".join(overrides),
        "batch_size": len(first["label"]),
        "num_workers": datamodule.num_workers,
        "loader_samples_per_s": round(loader_rate, 1),
        "loader_samples_per_cpu_s": round(loader_cpu_rate, 1),
    }
    if steps > 0:
        net = instantiate(cfg.model)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        for step in range(steps + 1):
            if step == 1:  # the first step pays one-off allocation costs
                started = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(first["input"], first.get("mask")), first["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        step_rate = steps * len(first["label"]) / (time.perf_counter() - started)
        result.update(train_samples_per_s=round(step_rate, 2), ratio=round(loader_rate / step_rate, 1))
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="loader throughput vs the model's training-step rate")
    parser.add_argument("experiment")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.num_workers=2")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--steps", type=int, default=3, help="training steps to time (0: loader only)")
    options = parser.parse_args()
    print(
        json.dumps(measure_throughput(options.experiment, options.overrides, options.batches, options.steps))
    )
