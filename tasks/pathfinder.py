"""LRA Pathfinder (32×32) and Path-X (128×128): reader of the released files, packed array cache, splits, CLI.

Released layout (shared `lra-data.md` §7.1), under `lra_release/lra_release/` as the tarball unpacks, or one
`lra_release/` less:

    pathfinder<R>/<difficulty>/metadata/<batch>.npy   plain text despite the extension, one line per image:
                                                      subpath filename nimg label continuity contour_length
                                                      distractor_length paddle_length paddle_thickness
                                                      paddle_margin n_paddle_contrasts   (label 1 = connected)
    pathfinder<R>/<difficulty>/imgs/<batch>/sample_<i>.png   8-bit greyscale R×R

Decoding 200k PNGs is slow and opens many files, so `pack` decodes them once into one uint8 `.npy` array (opened as
a memmap afterwards). Splits are those of S4/MEGA: `random_split` 80/10/10 of the metadata order with seed 42.
Empty PNGs (the release has one, `pathfinder32/curv_baseline/imgs/0/sample_172.png`) are skipped, counted and
logged, as LRA drops zero-byte images and S4/MEGA blacklist that file; any other unreadable image is an error.

Generate data in the same layout: `python -m tasks.pathfinder generate --help`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tasks import pathfinder_generator as generator

log = logging.getLogger(__name__)

METADATA_FIELDS = 11  # see the module docstring
LABEL_FIELD = 3
PACK_VERSION = 1  # bump when the packed format changes, so old caches are rebuilt
DECODE_CHUNK = 500  # images per unit of parallel decoding
HOW_TO_GET = (
    "download lra_release.gz from https://github.com/google-research/long-range-arena and unpack it into data_dir "
    "(`tar xzf lra_release.gz -C <data_dir>` gives <data_dir>/lra_release/lra_release/pathfinder32/...), "
    "generate our stand-in with `python -m tasks.pathfinder generate --out <data_dir>/lra_release`, "
    "or run with data.synthetic=true (a small generated set, not the benchmark)"
)


@dataclass(frozen=True)
class Sample:
    path: Path  # the PNG
    label: int


# --------------------------------------------------------------------------- locating and reading the release


def candidate_folders(data_dir: str | Path, resolution: int, difficulty: str) -> list[Path]:
    """Where `pathfinder<R>/<difficulty>` may lie under data_dir, most specific layout first."""
    root = Path(data_dir).expanduser()
    tail = Path(f"pathfinder{resolution}") / generator.difficulty_name(difficulty)
    prefixes = [Path("lra_release/lra_release"), Path("lra_release"), Path("."), Path("pathfinder")]
    return [root / prefix / tail for prefix in prefixes]


def find_folder(data_dir: str | Path, resolution: int, difficulty: str) -> Path:
    """The released difficulty folder (with `metadata/`) under data_dir; a clear error listing the tried paths."""
    candidates = candidate_folders(data_dir, resolution, difficulty)
    for folder in candidates:
        if (folder / "metadata").is_dir():
            return folder
    tried = "\n  ".join(str(c / "metadata") for c in candidates)
    raise FileNotFoundError(f"Pathfinder{resolution} data not found; looked for\n  {tried}\nTo get it: {HOW_TO_GET}.")


def read_metadata(folder: str | Path) -> list[Sample]:
    """All samples listed by `folder/metadata/*.npy`, files in integer order of their names, lines in file order."""
    folder = Path(folder)
    files = list((folder / "metadata").glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"no metadata/*.npy files in {folder}; {HOW_TO_GET}")
    bad = [f.name for f in files if not f.stem.isdigit()]
    if bad:
        raise ValueError(f"{folder / 'metadata'}: metadata files must be named <batch number>.npy, found {bad}")
    samples = []
    for file in sorted(files, key=lambda f: int(f.stem)):
        for number, line in enumerate(file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != METADATA_FIELDS:
                raise ValueError(
                    f"{file}:{number}: expected {METADATA_FIELDS} space-separated fields (subpath filename nimg "
                    f"label ...), found {len(fields)}: {line!r}. Is this a Pathfinder metadata file?"
                )
            label = fields[LABEL_FIELD]
            if label not in ("0", "1"):
                raise ValueError(f"{file}:{number}: label (field 4) must be 0 or 1, found {label!r}")
            samples.append(Sample(folder / fields[0] / fields[1], int(label)))
    return samples


def drop_empty(samples: list[Sample]) -> tuple[list[Sample], list[Path]]:
    """Samples whose PNG has bytes, and the empty ones (logged one by one); a missing PNG is an error."""
    kept, skipped = [], []
    for sample in samples:
        try:
            size = sample.path.stat().st_size
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{sample.path} is listed in the metadata but missing; re-extract the data ({HOW_TO_GET})"
            ) from None
        if size == 0:
            log.warning("skipping empty image %s (LRA drops zero-byte images, S4/MEGA blacklist it)", sample.path)
            skipped.append(sample.path)
        else:
            kept.append(sample)
    return kept, skipped


def decode_png(path: str | Path, resolution: int) -> np.ndarray:
    """One released PNG → uint8 [R, R] grey values (PIL `convert("L")` as S4/MEGA)."""
    try:
        with Image.open(path) as image:
            image.load()
            grey = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable PNG ({err}); the file is corrupt or truncated, re-extract it") from err
    if grey.shape != (resolution, resolution):
        raise ValueError(f"{path}: expected a {resolution}×{resolution} image, found {grey.shape[1]}×{grey.shape[0]}")
    return grey


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, resolution = args
    return np.stack([decode_png(p, resolution) for p in paths])


# --------------------------------------------------------------------------- packed array cache


@dataclass
class Packed:
    """A packed difficulty folder: images uint8 [N, R, R] (memmap), labels int64 [N]."""

    images: np.ndarray
    labels: np.ndarray
    info: dict

    @classmethod
    def open(cls, folder: str | Path) -> Packed:
        folder = Path(folder)
        info = json.loads((folder / "info.json").read_text())
        return cls(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "labels.npy"), info)


def pack_key(source: Path, resolution: int) -> str:
    """Cache key: the source folder, its metadata files (names, sizes, times) and the packed format."""
    h = hashlib.sha1(f"{source.resolve()}|{resolution}|{PACK_VERSION}".encode())
    for f in sorted((source / "metadata").glob("*.npy")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def pack(source: str | Path, resolution: int, cache_root: str | Path, workers: int = 1) -> Path:
    """Decode every image of a difficulty folder once into `cache_root/<name>-<key>/`; returns that folder.

    Written to a temporary folder renamed when complete, so an interrupted run leaves no half cache.
    """
    source = Path(source)
    target = Path(cache_root) / f"pathfinder{resolution}-{source.name}-{pack_key(source, resolution)}"
    if (target / "info.json").is_file():
        return target
    samples, skipped = drop_empty(read_metadata(source))
    if not samples:
        raise ValueError(f"{source}: the metadata lists no readable image")
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(samples), resolution, resolution))
    chunks = [([str(s.path) for s in samples[i:i + DECODE_CHUNK]], resolution)
              for i in range(0, len(samples), DECODE_CHUNK)]
    workers = max(1, min(workers, len(chunks)))
    log.info("packing %d Pathfinder%d images from %s into %s (%d workers)",
             len(samples), resolution, source, target, workers)
    row = 0
    with ProcessPoolExecutor(workers) if workers > 1 else generator.InlineExecutor() as pool:
        for block in pool.map(_decode_chunk, chunks):
            images[row:row + len(block)] = block
            row += len(block)
    images.flush()
    del images
    np.save(tmp / "labels.npy", np.array([s.label for s in samples], dtype=np.int64))
    info = {"source": str(source.resolve()), "resolution": resolution, "count": len(samples),
            "skipped_empty": [str(p) for p in skipped], "version": PACK_VERSION}
    (tmp / "info.json").write_text(json.dumps(info, indent=1))
    if skipped:
        log.warning("skipped %d empty image(s) of %s", len(skipped), source)
    try:
        tmp.rename(target)
    except OSError:  # another process packed the same folder meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def split_indices(count: int, val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int = 42) -> dict[str, np.ndarray]:
    """S4/MEGA's split: torch `random_split` with a seeded generator; val and test get int(fraction·N) each."""
    val, test = int(val_fraction * count), int(test_fraction * count)
    parts = torch.utils.data.random_split(range(count), [count - val - test, val, test],
                                          generator=torch.Generator().manual_seed(seed))
    return {name: np.asarray(part.indices, dtype=np.int64) for name, part in zip(("train", "val", "test"), parts)}


# --------------------------------------------------------------------------- command line


def _generate_command(args: argparse.Namespace) -> None:
    overrides = {}
    if args.contour_length is not None:
        overrides["contour_length"] = args.contour_length
    if args.distractor_dashes is not None:
        overrides["distractor_dashes"] = args.distractor_dashes
    style = generator.style_for(args.resolution, args.difficulty, **overrides)
    folder = generator.write_dataset(args.out, style, args.num_images, seed=args.seed, difficulty=args.difficulty,
                                     images_per_batch=args.images_per_batch, workers=args.workers)
    print(f"wrote {args.num_images} images to {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.pathfinder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write generated images in the released layout",
                              description="Write <out>/pathfinder<R>/<difficulty>/{imgs,metadata} with our "
                              "generator (LRA's settings per resolution). Not the benchmark's images.")
    gen.add_argument("--out", required=True, help="root folder; pathfinder<R>/ is created inside it")
    gen.add_argument("--resolution", type=int, default=32, choices=sorted(generator.PRESETS))
    gen.add_argument("--difficulty", default="hard",
                     help="hard|intermediate|easy or the released folder name (sets the contour length)")
    gen.add_argument("--num-images", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--workers", type=int, default=os.cpu_count(), help="processes (output does not depend on it)")
    gen.add_argument("--images-per-batch", type=int, default=1000, help="images per imgs/<batch>/ folder")
    gen.add_argument("--contour-length", type=int, help="dashes per target path (default: from the difficulty)")
    gen.add_argument("--distractor-dashes", type=int, help="total distractor dashes (default: LRA's setting)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.num_images < 1:
        parser.error("--num-images must be positive")
    _generate_command(args)


if __name__ == "__main__":
    main(sys.argv[1:])
