"""LRA Pathfinder (32×32) and Path-X (128×128): reader of the released files, packed array cache, splits, CLI.

Released layout (docs/data.md#pathfinder), under `lra_release/lra_release/` as the tarball unpacks, or one
`lra_release/` less:

    pathfinder<R>/<difficulty>/metadata/<batch>.npy   plain text despite the extension, one line per image:
                                                      subpath filename nimg label continuity contour_length
                                                      distractor_length paddle_length paddle_thickness
                                                      paddle_margin n_paddle_contrasts   (label 1 = connected)
    pathfinder<R>/<difficulty>/imgs/<batch>/sample_<i>.png   8-bit greyscale R×R

Decoding 200k PNGs is slow and opens many files, so the datamodule decodes them once into one uint8 `.npy` array
(opened as a memmap afterwards and read a whole batch at a time). Splits are those of S4/MEGA: `random_split`
80/10/10 of the metadata order with seed 42.
Empty PNGs (the release has one, `pathfinder32/curv_baseline/imgs/0/sample_172.png`) are skipped, counted and
logged, as LRA drops zero-byte images and S4/MEGA blacklist that file; any other unreadable image is an error.

Generate data in the same layout: `python -m tasks.data.pathfinder generate --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from tasks.data import download
from tasks.data import pathfinder_generator as generator
from tasks.data.pixels import PixelDataModule
from tasks.data.processes import process_pool

log = logging.getLogger(__name__)

METADATA_FIELDS = 11  # see the module docstring
LABEL_FIELD = 3
DECODE_CHUNK = 500  # images per unit of parallel decoding
HOW_TO_GET = (
    "`python -m tasks.download pathfinder` (Path-X: `pathx`; or data.download=true) takes the folder from "
    "lra_release.gz into <data_dir>/lra_release/; by hand: "
    "download lra_release.gz from https://github.com/google-research/long-range-arena and unpack it into "
    "paths.data_dir (`tar xzf lra_release.gz -C <data_dir>` gives <data_dir>/lra_release/lra_release/pathfinder32/), "
    "generate our stand-in with `python -m tasks.data.pathfinder generate --out <data_dir>/lra_release`, "
    "or run with data.synthetic=true (a small generated set, not the benchmark)"
)


@dataclass(frozen=True)
class Sample:
    folder: Path  # the difficulty folder
    name: str  # the PNG under it, "<subpath>/<filename>" as the metadata lists it
    label: int

    @property
    def path(self) -> Path:
        return self.folder / self.name

    @property
    def file(self) -> str:
        """`path` as a string, without building a Path (the cache key lists 200k of them)."""
        return f"{self.folder}{os.sep}{self.name}"


# --------------------------------------------------------------------------- reading the release


def read_metadata(folder: str | Path) -> list[Sample]:
    """All samples listed by `folder/metadata/*.npy`, files in integer order of their names, lines in file order."""
    folder = Path(folder)
    files = list((folder / "metadata").glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"no metadata/*.npy files in {folder}; {HOW_TO_GET}")
    bad = [f.name for f in files if not f.stem.isdigit()]
    if bad:
        raise ValueError(
            f"{folder / 'metadata'}: metadata files must be named <batch number>.npy, found {bad}"
        )
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
            samples.append(Sample(folder, f"{fields[0]}/{fields[1]}", int(label)))
    return samples


def drop_empty(samples: list[Sample]) -> tuple[list[Sample], list[Path]]:
    """Samples whose PNG has bytes, and the empty ones (logged one by one); a missing PNG is an error."""
    kept, skipped = [], []
    for sample in samples:
        try:
            size = os.stat(sample.file).st_size
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{sample.path} is listed in the metadata but missing; re-extract the data ({HOW_TO_GET})"
            ) from None
        if size == 0:
            log.warning(
                "skipping empty image %s (LRA drops zero-byte images, S4/MEGA blacklist it)", sample.path
            )
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
        raise ValueError(
            f"{path}: not a readable PNG ({err}); the file is corrupt or truncated, re-extract it"
        ) from err
    if grey.shape != (resolution, resolution):
        raise ValueError(
            f"{path}: expected a {resolution}×{resolution} image, found {grey.shape[1]}×{grey.shape[0]}"
        )
    return grey


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, resolution = args
    return np.stack([decode_png(p, resolution) for p in paths])


# --------------------------------------------------------------------------- decoding, split, datamodule


def decode_images(samples: list[Sample], resolution: int, target: str | Path, workers: int = 1) -> np.ndarray:
    """Decode the samples' PNGs into a new uint8 `.npy` memmap [N, R·R] at `target` (never all in memory)."""
    images = np.lib.format.open_memmap(
        target, mode="w+", dtype=np.uint8, shape=(len(samples), resolution * resolution)
    )
    chunks = [
        ([s.file for s in samples[i : i + DECODE_CHUNK]], resolution)
        for i in range(0, len(samples), DECODE_CHUNK)
    ]
    workers = max(1, min(workers, len(chunks)))
    row = 0
    with process_pool(workers) if workers > 1 else generator.InlineExecutor() as pool:
        for block in pool.map(_decode_chunk, chunks):
            images[row : row + len(block)] = block.reshape(len(block), -1)
            row += len(block)
    images.flush()
    return images


def split_indices(
    count: int, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42
) -> dict[str, np.ndarray]:
    """S4/MEGA's split: torch `random_split` with a seeded generator; val and test get int(fraction·N) each."""
    val, test = int(val_fraction * count), int(test_fraction * count)
    parts = torch.utils.data.random_split(
        range(count), [count - val - test, val, test], generator=torch.Generator().manual_seed(seed)
    )
    return {
        name: np.asarray(part.indices, dtype=np.int64) for name, part in zip(("train", "val", "test"), parts)
    }


class PathfinderDataModule(PixelDataModule):
    """Pathfinder (resolution 32) / Path-X (128): R·R pixels in row-major order, 2 classes, 80/10/10 split.

    Input rule (real: (p/255 − 0.5)/0.5 as S4/MEGA, i.e. [−1, 1]; tokens: p + 1; `pool`): `tasks.data.pixels`.
    synthetic=true: `synthetic_size` images of our generator (LRA's style for the resolution with the
    `synthetic_style` overrides, e.g. {contour_length: 6}), written in the released layout and read like it.
    """

    task = "pathfinder"
    download_hint = f"To get it: {HOW_TO_GET}"

    def __init__(
        self,
        resolution: int = 32,
        difficulty: str = "hard",
        pixel_mean: float = 0.5,
        pixel_std: float = 0.5,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 42,
        synthetic_size: int = 2000,
        synthetic_style: dict[str, Any] | None = None,
        synthetic_seed: int = 0,
        decode_workers: int | None = None,
        pool: int = 1,
        **kwargs: Any,
    ) -> None:
        if resolution not in generator.PRESETS:
            raise ValueError(f"data.resolution={resolution}: choose one of {sorted(generator.PRESETS)}")
        super().__init__(resolution, pixel_mean, pixel_std, pool, **{"num_classes": 2, **kwargs})
        self.resolution = resolution
        self.difficulty = generator.difficulty_name(difficulty)
        self.release_folders = (
            f"pathfinder{resolution}/{self.difficulty}",  # as released
            f"pathfinder/pathfinder{resolution}/{self.difficulty}",  # as in S4
        )
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.synthetic_size, self.synthetic_seed = synthetic_size, synthetic_seed
        self.synthetic_style = dict(synthetic_style or {})
        self.decode_workers = decode_workers or os.cpu_count() or 1
        self.standin_description = f"{synthetic_size} images of our Pathfinder generator"

    # ---- raw files ----------------------------------------------------------------------------------------------

    def has_source(self, folder: Path) -> bool:
        return (folder / "metadata").is_dir()

    def check_folder(self, folder: Path) -> None:
        if not any((folder / "metadata").glob("*.npy")):
            raise FileNotFoundError(
                f"{folder} has no metadata/*.npy files; point data.release_dir at the "
                f"pathfinder{self.resolution}/{self.difficulty} folder of the release. {HOW_TO_GET}"
            )

    def source_files(self, folder: Path) -> list[Path | str]:
        # the metadata and every image it lists: a PNG replaced in place changes the cache key (one stat per file)
        return sorted((folder / "metadata").glob("*.npy")) + [sample.file for sample in read_metadata(folder)]

    def style(self) -> generator.PathfinderStyle:
        """The stand-in's generator style; an unknown key in `synthetic_style` is a config error."""
        fields = {f.name for f in dataclasses.fields(generator.PathfinderStyle)}
        unknown = sorted(set(self.synthetic_style) - fields)
        if unknown:
            raise ValueError(f"data.synthetic_style: unknown option(s) {unknown}; choose from {sorted(fields)}")
        return generator.style_for(self.resolution, self.difficulty, **self.synthetic_style)

    def synthetic_options(self) -> dict[str, Any]:
        return {"style": dataclasses.asdict(self.style()), "size": self.synthetic_size, "seed": self.synthetic_seed}

    def download_into(self, root: Path) -> None:
        download.download_into(root, [download.pathfinder_part(self.resolution, self.difficulty)])

    def generate(self, folder: Path, synthetic: bool) -> None:
        generator.write_dataset(
            folder, self.style(), self.synthetic_size, seed=self.synthetic_seed, workers=self.decode_workers
        )

    # ---- array cache --------------------------------------------------------------------------------------------

    def token_options(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "split": [self.val_fraction, self.test_fraction, self.split_seed]}

    def read_arrays(self, folder: Path, out: Path) -> dict[str, np.ndarray]:
        """Pixels uint8 [N, R·R] decoded straight into the cache (Path-X is 3.3 GB), labels, the seeded split."""
        samples, skipped = drop_empty(read_metadata(folder))
        if not samples:
            raise ValueError(f"{folder}: the metadata lists no readable image")
        if skipped:
            log.warning("Pathfinder: skipped %d empty image(s) in %s", len(skipped), folder)
        log.info(
            "decoding %d Pathfinder%d images from %s (%d workers)",
            len(samples),
            self.resolution,
            folder,
            self.decode_workers,
        )
        splits = split_indices(len(samples), self.val_fraction, self.test_fraction, self.split_seed)
        return {
            "input": decode_images(samples, self.resolution, out / "input.npy", self.decode_workers),
            "label": np.array([s.label for s in samples], dtype=np.int64),
            "skipped_empty": np.array([str(p) for p in skipped], dtype=str),  # in `extras` after setup
            **{f"split_{name}": rows for name, rows in splits.items()},
        }


# --------------------------------------------------------------------------- command line


def _generate_command(args: argparse.Namespace) -> None:
    overrides = {}
    if args.contour_length is not None:
        overrides["contour_length"] = args.contour_length
    if args.distractor_dashes is not None:
        overrides["distractor_dashes"] = args.distractor_dashes
    style = generator.style_for(args.resolution, args.difficulty, **overrides)
    folder = Path(args.out) / f"pathfinder{args.resolution}" / generator.difficulty_name(args.difficulty)
    generator.write_dataset(
        folder,
        style,
        args.num_images,
        seed=args.seed,
        images_per_batch=args.images_per_batch,
        workers=args.workers,
    )
    print(f"wrote {args.num_images} images to {folder}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks.data.pathfinder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="write generated images in the released layout",
        description="Write <out>/pathfinder<R>/<difficulty>/{imgs,metadata} with our "
        "generator (LRA's settings per resolution). Not the benchmark's images.",
    )
    gen.add_argument("--out", required=True, help="root folder; pathfinder<R>/ is created inside it")
    gen.add_argument("--resolution", type=int, default=32, choices=sorted(generator.PRESETS))
    gen.add_argument(
        "--difficulty",
        default="hard",
        help="hard|intermediate|easy or the released folder name (sets the contour length)",
    )
    gen.add_argument("--num-images", type=int, default=1000)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="processes (output does not depend on it)"
    )
    gen.add_argument("--images-per-batch", type=int, default=1000, help="images per imgs/<batch>/ folder")
    gen.add_argument(
        "--contour-length", type=int, help="dashes per target path (default: from the difficulty)"
    )
    gen.add_argument("--distractor-dashes", type=int, help="total distractor dashes (default: LRA's setting)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.num_images < 1:
        parser.error("--num-images must be positive")
    _generate_command(args)


if __name__ == "__main__":
    main(sys.argv[1:])
