"""LRA Image: sequential greyscale CIFAR-10 (1024 pixels, 10 classes).

Reader of the released CIFAR-10 python pickles (or a Hugging Face copy of `cifar10`), the greyscale conversions of
the reference pipelines, the seeded 45k/5k split of S4/MEGA, a learnable stand-in written in the released layout,
and the datamodule. Formats and sources: docs/data.md#image; usage: README "Image and Speech Commands data".
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tasks.data import download
from tasks.data.base import hub_snapshots
from tasks.data.pixels import PixelDataModule

log = logging.getLogger(__name__)

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIDE = 32
HF_REPOS = ("uoft-cs/cifar10", "cifar10")  # hub names of the same data set (new, legacy)
HOW_TO_GET = (
    "`python -m tasks.download image` (or data.download=true; `--source hf` / data.download=hf for the Hugging "
    "Face copy) fetches, verifies and unpacks it; by hand: "
    "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and untar it into paths.data_dir "
    "(it creates cifar-10-batches-py/), or save a Hugging Face copy there "
    "(`datasets.load_dataset('uoft-cs/cifar10').save_to_disk('<paths.data_dir>/cifar10')`); a snapshot of "
    "uoft-cs/cifar10 in the HF hub cache (data.hub_cache) is found too. Or run with data.synthetic=true for a "
    "stand-in (not the benchmark)"
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
    """Rows of the HF cifar10 schema ({"img": PNG, "label": int}) → (images, labels)."""
    from PIL import Image

    images = np.empty((len(rows), SIDE, SIDE, 3), dtype=np.uint8)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        if "img" not in row or "label" not in row:
            raise ValueError(
                f"{source}: expected columns img and label (HF cifar10 schema), found {sorted(row)}"
            )
        image = row["img"]
        image = image if hasattr(image, "convert") else Image.open(io.BytesIO(image["bytes"]))
        images[i] = np.asarray(image.convert("RGB"))
        labels[i] = row["label"]
    return images, labels


def parquet_shards(folder: Path) -> dict[str, list[Path]]:
    """{"train": [...], "test": [...]} parquet shards of an HF hub snapshot (`plain_text/train-*.parquet`)."""
    return {split: sorted(folder.glob(f"**/{split}-*.parquet")) for split in ("train", "test")}


def read_cifar(folder: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": 50k (batch order), "test": 10k} from `cifar-10-batches-py/`, an HF `save_to_disk` folder of
    cifar10, or an HF hub snapshot of its parquet shards. HF row order is believed to follow the pickle batches
    (unverified); it only matters for which images the seeded validation split picks."""
    import datasets

    folder = Path(folder)
    if (folder / TEST_BATCH).is_file():
        return read_cifar_folder(folder)
    if (folder / "dataset_dict.json").is_file():
        table = datasets.load_from_disk(str(folder))
    elif all(parquet_shards(folder).values()):
        shards = {split: [str(p) for p in paths] for split, paths in parquet_shards(folder).items()}
        table = datasets.load_dataset("parquet", data_files=shards)
    else:
        raise FileNotFoundError(
            f"{folder} holds neither the CIFAR-10 python batches ({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) nor an "
            f"HF copy of cifar10 (dataset_dict.json, or train-*/test-*.parquet). To fix: {HOW_TO_GET}"
        )
    return {split: _decode_hf_split(table[split], f"{folder} [{split}]") for split in ("train", "test")}


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
    tint = np.stack([0.6 + 0.04 * labels, 1.0 - 0.04 * labels, 0.8 + 0.02 * labels], axis=-1)[
        :, None, None, :
    ]
    pixels = 128 + 90 * wave[..., None] * tint + rng.normal(0, 20, size=(n, SIDE, SIDE, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_standin(folder: str | Path, train_size: int = 2000, test_size: int = 500, seed: int = 0) -> None:
    """Write a learnable stand-in into `folder` in the released `cifar-10-batches-py` layout. NOT CIFAR-10."""
    train, test = make_standin_images(train_size, seed), make_standin_images(test_size, seed + 1)
    write_cifar_folder(folder, {"train": train, "test": test})


# --------------------------------------------------------------------------- datamodule


class ImageDataModule(PixelDataModule):
    """LRA Image: sequential greyscale CIFAR-10, 1024 pixels, 45k / 5k / 10k (S4/MEGA's seeded split).

    Input rule (real: (p/255 − 0.48)/0.24 as MEGA's --pixel-normalization 0.48 0.24; tokens: p + 1):
    `tasks.data.pixels`. greyscale="pil" (S4/MEGA: rounds) or "tf" (LRA: truncates; ±1 on about a quarter of the
    pixels). Found as the released pickles, an HF `save_to_disk` copy, or an HF hub snapshot (`hub_cache`).
    """

    task = "image"
    release_folders = (CIFAR_FOLDER, f"cifar/{CIFAR_FOLDER}", "cifar10")
    download_hint = f"To fix: {HOW_TO_GET}"
    standin_description = "class-patterned gratings written as CIFAR-10 pickles"

    def __init__(
        self,
        greyscale: str = "pil",
        pixel_mean: float = 0.48,
        pixel_std: float = 0.24,
        val_size: int = 5000,
        split_seed: int = 42,
        synthetic_sizes: tuple[int, int] = (2000, 500),
        hub_cache: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(SIDE, pixel_mean, pixel_std, **{"num_classes": len(LABEL_NAMES), **kwargs})
        if greyscale not in GREYSCALE:
            raise ValueError(f"data.greyscale={greyscale!r}: choose one of {sorted(GREYSCALE)}")
        self.greyscale = greyscale
        self.split_seed = split_seed
        self.synthetic_sizes = tuple(synthetic_sizes)
        self.val_size = min(val_size, self.synthetic_sizes[0] // 10) if self.synthetic else val_size
        self.hub_cache = hub_cache

    def token_options(self) -> dict:
        return {"greyscale": self.greyscale, "val_size": self.val_size, "split_seed": self.split_seed}

    def synthetic_options(self) -> dict:
        return {"sizes": list(self.synthetic_sizes), "seed": self.seed}

    def generate(self, folder: Path, synthetic: bool) -> None:
        write_standin(folder, *self.synthetic_sizes, seed=self.seed)

    def fallback_folders(self) -> list[Path]:
        return hub_snapshots(HF_REPOS, self.hub_cache)

    def download_into(self, root: Path) -> None:
        download.download_into(root, download.task_parts("image", "hf" if self.download == "hf" else "archive"))

    def has_source(self, folder: Path) -> bool:
        pickles = any((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))
        return pickles or (folder / "dataset_dict.json").is_file() or any(parquet_shards(folder).values())

    def check_folder(self, folder: Path) -> None:
        if self.source_files(folder):
            return
        missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (folder / name).is_file()]
        if len(missing) < len(TRAIN_BATCHES) + 1:
            raise FileNotFoundError(f"{folder} lacks the CIFAR-10 batch(es) {missing}. To fix: {HOW_TO_GET}")
        read_cifar(folder)  # raises naming the folder and what it should hold

    def source_files(self, folder: Path) -> list[Path]:
        pickles = [folder / name for name in (*TRAIN_BATCHES, TEST_BATCH)]
        if all(p.is_file() for p in pickles):
            return pickles
        if (folder / "dataset_dict.json").is_file():
            return sorted(p for p in folder.rglob("*") if p.is_file())
        shards = parquet_shards(folder)
        return [p for paths in shards.values() for p in paths] if all(shards.values()) else []

    def read_arrays(self, folder: Path, out: Path) -> dict[str, np.ndarray]:
        """Grey `input` uint8 [N, 1024] and `label` over train + test; `split_val` is the seeded pick of
        `val_size` training images, `split_train` the rest, `split_test` the test batch."""
        splits = read_cifar(folder)
        (train_images, train_labels), (test_images, test_labels) = splits["train"], splits["test"]
        train_rows, val_rows = split_train_val(len(train_labels), self.val_size, self.split_seed)
        return {
            "input": np.concatenate(
                [to_sequences(train_images, self.greyscale), to_sequences(test_images, self.greyscale)]
            ),
            "label": np.concatenate([train_labels, test_labels]),
            "split_train": train_rows,
            "split_val": val_rows,
            "split_test": np.arange(len(test_labels)) + len(train_labels),
        }
