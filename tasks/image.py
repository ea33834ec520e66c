"""LRA Image: sequential greyscale CIFAR-10 (1024 pixels, 10 classes).

Reader of the released CIFAR-10 python pickles (or a Hugging Face copy of `cifar10`), the greyscale conversions of
the reference pipelines, the seeded 45k/5k split of S4/MEGA, a learnable stand-in written in the released layout,
and the datamodule. Format facts: `docs/image-speech-data.md` and the shared `lra-data.md` §6.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tasks.arrays import ArrayDataModule

log = logging.getLogger(__name__)

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32
HF_REPOS = ("uoft-cs/cifar10", "cifar10")  # hub names of the same data set (new, legacy)
HOW_TO_GET = (
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and untar it into data_dir "
    "(it creates cifar-10-batches-py/), or put a Hugging Face copy of cifar10 there "
    "(`load_dataset('uoft-cs/cifar10').save_to_disk(data_dir + '/cifar10')`), "
    "or run with data.synthetic=true for a stand-in (not the benchmark)"
)


# --------------------------------------------------------------------------- released pickles


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch → (images uint8 [N, 32, 32, 3], labels int64 [N]).

    The batches are Python-2 pickles of a dict; with encoding="bytes" its keys are bytes (b"data"), so keys are
    normalised to str. `data` rows hold the R plane, then G, then B, each 32×32 row-major.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable CIFAR-10 python pickle ({err}); {HOW_TO_GET}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict with keys data/labels, got {type(raw).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise ValueError(
            f"{path}: CIFAR-10 batch has no {'/'.join(missing)} key (found {sorted(batch)}); "
            "is this a cifar-10-batches-py file (not CIFAR-100, whose labels are 'fine_labels')?"
        )
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or len(data) != len(labels):
        raise ValueError(
            f"{path}: 'data' must be [N, 3072] with one label per row, got data {data.shape} and "
            f"{len(labels)} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(LABEL_NAMES)):
        raise ValueError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar_folder(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`cifar-10-batches-py/` → {"train": 50k images in batch order, "test": 10k}."""
    folder = Path(folder)
    parts = [read_cifar_batch(folder / name) for name in TRAIN_BATCHES]
    return {
        "train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
        "test": read_cifar_batch(folder / TEST_BATCH),
    }


def write_cifar_folder(folder: str | Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write images as the released layout: five train batches + test batch + batches.meta, byte keys, protocol 2."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = splits["train"]
    chunks = np.array_split(np.arange(len(train_labels)), len(TRAIN_BATCHES))
    batches = [(name, train_images[idx], train_labels[idx]) for name, idx in zip(TRAIN_BATCHES, chunks)]
    batches.append((TEST_BATCH, *splits["test"]))
    for i, (name, images, labels) in enumerate(batches):
        content = {
            b"batch_label": f"batch {i + 1} of {len(batches)}".encode(),
            b"labels": [int(y) for y in labels],
            b"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1),
            b"filenames": [f"standin_{i}_{j}.png".encode() for j in range(len(images))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    meta = {
        b"label_names": [n.encode() for n in LABEL_NAMES],
        b"num_cases_per_batch": len(chunks[0]),
        b"num_vis": 3 * SIDE * SIDE,
    }
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)


# --------------------------------------------------------------------------- Hugging Face copies


def _decode_hf_split(rows: Sequence[dict], source: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the HF cifar10 schema ({"img": {"bytes": png}, "label": int}) → (images, labels)."""
    from PIL import Image

    images = np.empty((len(rows), SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        if "img" not in row or "label" not in row:
            raise ValueError(f"{source}: expected columns img and label (HF cifar10 schema), found {sorted(row)}")
        image = row["img"]
        image = image if hasattr(image, "convert") else Image.open(io.BytesIO(image["bytes"]))
        images[i] = np.asarray(image.convert("RGB"))
        labels[i] = row["label"]
    return images, labels


def find_hf_parquet(hub_cache: str | Path | None = None) -> dict[str, list[Path]] | None:
    """Parquet shards of cifar10 in a Hugging Face hub cache (`datasets--uoft-cs--cifar10/snapshots/*/...`)."""
    hub_cache = Path(
        hub_cache or os.environ.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub"
    )
    for repo in HF_REPOS:
        for snapshot in sorted(hub_cache.glob(f"datasets--{repo.replace('/', '--')}/snapshots/*")):
            shards = {s: sorted(snapshot.glob(f"**/{s}-*.parquet")) for s in ("train", "test")}
            if all(shards.values()):
                return shards
    return None


def read_cifar_hf(source: str | Path | dict[str, list[Path]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A `save_to_disk` folder of cifar10, or parquet shards from `find_hf_parquet` → {"train", "test"}.

    Row order is the HF data set's; it is believed to follow the pickle batches (unverified), which matters
    only for which images the seeded validation split picks.
    """
    import datasets

    if isinstance(source, dict):
        table = datasets.load_dataset("parquet", data_files={k: [str(p) for p in v] for k, v in source.items()})
    else:
        table = datasets.load_from_disk(str(source))
    return {split: _decode_hf_split(table[split], f"{source}[{split}]") for split in ("train", "test")}


def read_cifar(data_dir: str | Path, hub_cache: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Find CIFAR-10 under data_dir (pickles, then an HF `save_to_disk` folder) or in the HF hub cache."""
    data_dir = Path(data_dir)
    candidates = [data_dir / CIFAR_FOLDER, data_dir / "cifar" / CIFAR_FOLDER]
    for folder in candidates:
        if (folder / TEST_BATCH).is_file():
            return read_cifar_folder(folder)
    for folder in (data_dir / "cifar10", data_dir / "cifar"):
        if (folder / "dataset_dict.json").is_file():
            return read_cifar_hf(folder)
    shards = find_hf_parquet(hub_cache)
    if shards is not None:
        return read_cifar_hf(shards)
    looked = ", ".join(str(p) for p in candidates + [data_dir / "cifar10", data_dir / "cifar"])
    raise FileNotFoundError(f"CIFAR-10 not found: looked in {looked} and the HF hub cache. To fix: {HOW_TO_GET}")


# --------------------------------------------------------------------------- greyscale, tokens, split


def grey_pil(images: np.ndarray) -> np.ndarray:
    """RGB uint8 [..., 3] → grey uint8, as PIL `convert("L")` (S4/MEGA): ITU-R 601-2 weights, round to nearest."""
    rgb = images.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def grey_tf(images: np.ndarray) -> np.ndarray:
    """RGB uint8 → grey uint8, as LRA's `tf.image.rgb_to_grayscale` on uint8: float32, weights .2989/.5870/.1140,
    back to uint8 by ×255.5 and truncation. Differs from `grey_pil` by ±1 on some pixels."""
    scaled = images.astype(np.float32) * np.float32(1.0 / 255.0)
    weights = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
    grey = scaled @ weights
    return np.clip(np.floor(grey * np.float32(255.5)), 0, 255).astype(np.uint8)


GREYSCALE = {"pil": grey_pil, "tf": grey_tf}


def to_sequences(images: np.ndarray, greyscale: str = "pil") -> np.ndarray:
    """[N, 32, 32, 3] uint8 → [N, 1024] grey uint8, row-major (pixel (r, c) at r·32 + c)."""
    if greyscale not in GREYSCALE:
        raise ValueError(f"data.greyscale={greyscale!r}: choose one of {sorted(GREYSCALE)}")
    return GREYSCALE[greyscale](images).reshape(len(images), -1)


def split_train_val(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """S4/MEGA's `random_split(train, [n − val_size, val_size], generator=manual_seed(seed))` as index arrays."""
    if not 0 < val_size < n:
        raise ValueError(f"data.val_size={val_size} must lie in 1..{n - 1} for {n} training images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return order[: n - val_size], order[n - val_size :]


# --------------------------------------------------------------------------- stand-in


def make_standin_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-patterned RGB images: class k is a grating at k·18° with a class period, tint, noise, random phase."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(LABEL_NAMES)
    rng.shuffle(labels)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    angle = np.deg2rad(18.0 * labels)[:, None, None]
    period = (4.0 + 2.0 * (labels % 3))[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    wave = np.sin(2 * np.pi * (np.cos(angle) * cols + np.sin(angle) * rows) / period + phase)
    tint = np.stack([0.6 + 0.04 * labels, 1.0 - 0.04 * labels, 0.8 + 0.02 * labels], axis=-1)[:, None, None, :]
    pixels = 128 + 90 * wave[..., None] * tint + rng.normal(0, 20, size=(n, SIDE, SIDE, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_standin(folder: str | Path, train_size: int = 2000, test_size: int = 500, seed: int = 0) -> Path:
    """Write a learnable stand-in as `folder/cifar-10-batches-py/` (the released layout). NOT CIFAR-10."""
    target = Path(folder) / CIFAR_FOLDER
    write_cifar_folder(
        target,
        {"train": make_standin_images(train_size, seed), "test": make_standin_images(test_size, seed + 1)},
    )
    return target


# --------------------------------------------------------------------------- cache and batches


def build_arrays(splits: dict[str, tuple[np.ndarray, np.ndarray]], greyscale: str, val_size: int, split_seed: int):
    """Released splits → cache arrays: grey `input` uint8 [N, 1024] and `label` over train + test, and the row
    indices `split_train` / `split_val` (the seeded split of the training images) / `split_test`."""
    train_images, train_labels = splits["train"]
    test_images, test_labels = splits["test"]
    train_rows, val_rows = split_train_val(len(train_labels), val_size, split_seed)
    return {
        "input": np.concatenate([to_sequences(train_images, greyscale), to_sequences(test_images, greyscale)]),
        "label": np.concatenate([train_labels, test_labels]),
        "split_train": train_rows,
        "split_val": val_rows,
        "split_test": np.arange(len(test_labels)) + len(train_labels),
    }


def pixels_to_batch(rows: dict[str, np.ndarray], input_kind: str, mean: float, std: float) -> dict[str, torch.Tensor]:
    """Grey uint8 rows → Contract-1 batch: floats (p/255 − mean)/std, or token ids p + 1 (0 stays padding)."""
    pixels = torch.from_numpy(rows["input"])
    if input_kind == "real":
        values = (pixels.float() / 255.0 - mean) / std
    else:
        values = pixels.long() + 1
    return {"input": values, "label": torch.from_numpy(rows["label"])}


class ImageDataModule(ArrayDataModule):
    """LRA Image: sequential greyscale CIFAR-10, 1024 pixels, 45k / 5k / 10k (S4/MEGA split).

    input_kind="real": floats (p/255 − pixel_mean)/pixel_std (MEGA's recipe: 0.48 / 0.24);
    input_kind="tokens": ids p + 1 in 1..256, 0 = padding (LRA feeds discrete pixels; vocab 257).
    greyscale="pil" (S4/MEGA, rounds) or "tf" (LRA, truncates; ±1 on some pixels).
    """

    name = "image"

    def __init__(
        self,
        data_dir: str,
        greyscale: str = "pil",
        input_kind: str = "real",
        pixel_mean: float = 0.48,
        pixel_std: float = 0.24,
        val_size: int = 5000,
        split_seed: int = 42,
        synthetic_size: tuple[int, int] = (2000, 500),
        hub_cache: str | None = None,
        **common,
    ):
        super().__init__(data_dir, **common)
        if greyscale not in GREYSCALE:
            raise ValueError(f"data.greyscale={greyscale!r}: choose one of {sorted(GREYSCALE)}")
        if input_kind not in ("real", "tokens"):
            raise ValueError(f"data.input_kind={input_kind!r}: choose real or tokens")
        self.greyscale = greyscale
        self.input_kind = input_kind
        self.pixel_mean = pixel_mean
        self.pixel_std = pixel_std
        self.val_size = val_size if not self.synthetic else min(val_size, synthetic_size[0] // 10)
        self.split_seed = split_seed
        self.synthetic_size = tuple(synthetic_size)
        self.hub_cache = hub_cache

    def cache_options(self) -> dict:
        options = {"greyscale": self.greyscale, "val_size": self.val_size, "split_seed": self.split_seed}
        if self.synthetic:
            options["synthetic_size"] = list(self.synthetic_size)
        return {**super().cache_options(), **options}

    def build(self) -> dict[str, np.ndarray]:
        if self.synthetic:
            source = self.data_dir / "standin"
            log.warning("STAND-IN DATA (data.synthetic=true): class-patterned gratings, NOT CIFAR-10")
            write_standin(source, *self.synthetic_size)
            splits = read_cifar(source, hub_cache=source)
        else:
            splits = read_cifar(self.data_dir, self.hub_cache)
        return build_arrays(splits, self.greyscale, self.val_size, self.split_seed)

    def batch_transform(self):
        return partial(pixels_to_batch, input_kind=self.input_kind, mean=self.pixel_mean, std=self.pixel_std)
