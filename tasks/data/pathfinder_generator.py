"""Our own Pathfinder generator: dashed curvy paths, two marker discs, distractors (docs/data.md#pathfinder).

A scene holds two target paths A and B of `contour_length` dashes whose first dashes start `seed_distance` apart,
plus short distractor paths. One disc marks the start of one target path; the other marks the end of the same path
(label 1, "connected") or of the other one (label 0). Both classes therefore contain the same two target paths and
differ only in which end is marked. Paths grow dash by dash: the next direction is sampled among candidate angles
with weight cos²(min(continuity·|turn|, π/2)), restricted to free space of an occupancy grid that keeps dashes of
different paths `margin` apart. Images are drawn at `antialias`× resolution and average-pooled.

`write_dataset` writes the released layout of a difficulty folder (`imgs/<batch>/sample_<i>.png` and plain-text
`metadata/<batch>.npy`), so the reader in `tasks.pathfinder` loads generated and released data alike.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.data.processes import process_pool

log = logging.getLogger(__name__)

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}
DIFFICULTY_ALIASES = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
IMAGES_PER_TASK = (
    50  # images per unit of parallel work; each unit has its own seed, so output ignores `workers`
)


@dataclass(frozen=True)
class PathfinderStyle:
    """Generator parameters in pixels of the final image (names as in `snakes2.py` where one exists)."""

    resolution: int
    dash_length: float  # paddle_length
    margins: tuple[
        float, ...
    ]  # paddle_margin_list: free space kept around dashes of other paths, one per image
    thickness: float  # paddle_thickness
    continuity: float  # turn sharpness: turns beyond (π/2)/continuity get zero weight
    marker_radius: float
    seed_distance: float  # distance between the first points of the two target paths
    distractor_dashes: int  # number of distractor paths = distractor_dashes // distractor_length
    target_contrast: float  # paddle_contrast × snake_contrast
    distractor_contrast: float  # snake_contrast
    marker_contrast: float = 1.0
    contour_length: int = 14  # dashes per target path
    antialias: int = 2
    padding: int = 1  # border strip kept free
    dash_gap: float | None = (
        None  # gap between consecutive dashes of a straight path; None = 2·margin (original)
    )
    max_retries: int = 2  # resamples of a colliding dash before the path fails

    @property
    def distractor_length(self) -> int:
        return max(self.contour_length // 3, 1)

    @property
    def num_distractors(self) -> int:
        return self.distractor_dashes // self.distractor_length

    def metadata_fields(self, margin: float) -> list[str]:
        """Fields 5-11 of a released metadata line, after `subpath filename nimg label`."""
        return [
            f"{self.continuity}",
            f"{self.contour_length}",
            f"{self.distractor_length}",
            f"{self.dash_length:g}",
            f"{self.thickness}",
            f"{margin:g}",
            "1",
        ]


# LRA's settings per resolution (google-research/long-range-arena `lra_benchmarks/data/pathfinder.py`)
PRESETS: dict[int, PathfinderStyle] = {
    32: PathfinderStyle(
        32,
        dash_length=2,
        margins=(1,),
        thickness=0.5,
        continuity=1.0,
        marker_radius=1.5,
        seed_distance=7,
        distractor_dashes=20,
        target_contrast=1.5,
        distractor_contrast=2.0,
    ),
    64: PathfinderStyle(
        64,
        dash_length=5,
        margins=(1,),
        thickness=1.0,
        continuity=1.8,
        marker_radius=2.5,
        seed_distance=12,
        distractor_dashes=22,
        target_contrast=0.8,
        distractor_contrast=0.8,
    ),
    128: PathfinderStyle(
        128,
        dash_length=5,
        margins=(2, 3),
        thickness=1.5,
        continuity=1.8,
        marker_radius=3,
        seed_distance=20,
        distractor_dashes=35,
        target_contrast=0.9,
        distractor_contrast=0.9,
    ),
    256: PathfinderStyle(
        256,
        dash_length=5,
        margins=(3,),
        thickness=2.0,
        continuity=1.8,
        marker_radius=5,
        seed_distance=27,
        distractor_dashes=30,
        target_contrast=1.0,
        distractor_contrast=1.0,
        padding=22,
    ),
}


def difficulty_name(difficulty: str) -> str:
    """`hard` → `curv_contour_length_14` etc.; released folder names pass through."""
    name = DIFFICULTY_ALIASES.get(difficulty, difficulty)
    if name not in DIFFICULTIES:
        choices = sorted(DIFFICULTIES) + sorted(DIFFICULTY_ALIASES)
        raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}; choose one of {choices}")
    return name


def style_for(resolution: int, difficulty: str = "hard", **overrides) -> PathfinderStyle:
    """LRA's style for a resolution and difficulty, with field overrides (e.g. `num_distractors` via dashes)."""
    if resolution not in PRESETS:
        raise ValueError(f"no Pathfinder preset for resolution {resolution}; choose one of {sorted(PRESETS)}")
    overrides.setdefault("contour_length", DIFFICULTIES[difficulty_name(difficulty)])
    return dataclasses.replace(PRESETS[resolution], **overrides)


# --------------------------------------------------------------------------- geometry


def _unit(angle: np.ndarray | float) -> np.ndarray:
    """Direction (dy, dx) of an angle; works on arrays (last axis = y, x)."""
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1)


def _near_segment(size: int, scale: int, start: np.ndarray, end: np.ndarray, radius: float):
    """Pixels of a size×size grid (pixel centres at (i + 0.5)/scale) within `radius` of the segment start→end.

    Returns (row slice, column slice, bool mask of that window) so callers touch only a small window.
    """
    (y0, x0), (y1, x1) = start.tolist(), end.tolist()
    rows = slice(
        max(math.floor((min(y0, y1) - radius) * scale), 0),
        min(math.ceil((max(y0, y1) + radius) * scale), size),
    )
    cols = slice(
        max(math.floor((min(x0, x1) - radius) * scale), 0),
        min(math.ceil((max(x0, x1) + radius) * scale), size),
    )
    ys = ((np.arange(rows.start, rows.stop) + 0.5) / scale - y0)[:, None]  # offsets from start
    xs = ((np.arange(cols.start, cols.stop) + 0.5) / scale - x0)[None, :]
    dy, dx = y1 - y0, x1 - x0
    length2 = dy * dy + dx * dx
    if length2 > 0:  # closest point of the segment: start + t·(dy, dx), t clipped to [0, 1]
        t = np.minimum(np.maximum((ys * dy + xs * dx) / length2, 0.0), 1.0)
        ys, xs = ys - t * dy, xs - t * dx
    return rows, cols, ys * ys + xs * xs <= radius * radius


class _Scene:
    """Occupancy grid of one image and the growth of its paths."""

    def __init__(self, style: PathfinderStyle, rng: np.random.Generator, margin: float):
        self.style = style
        self.rng = rng
        self.margin = margin
        self.gap = 2 * margin if style.dash_gap is None else style.dash_gap
        r, p = style.resolution, style.padding
        self.occupied = np.ones((r, r), dtype=bool)
        self.occupied[p : r - p, p : r - p] = False
        self.low, self.high = float(p), float(r - p)
        # candidate directions: one per pixel of arc on the circle of radius dash_length + margin (as the original)
        count = max(int(math.ceil(2 * math.pi * (style.dash_length + margin))), 8)
        self.angles = np.arange(count) * (2 * math.pi / count)
        self.directions = _unit(self.angles)

    def _inside(self, points: np.ndarray) -> np.ndarray:
        return np.all((points >= self.low) & (points < self.high), axis=-1)

    def _collides(self, start: np.ndarray, end: np.ndarray) -> bool:
        if not all(self.low <= v < self.high for v in (*start.tolist(), *end.tolist())):
            return True
        rows, cols, core = _near_segment(self.style.resolution, 1, start, end, self.style.thickness / 2)
        return bool(np.any(self.occupied[rows, cols] & core))

    def _occupy(self, start: np.ndarray, end: np.ndarray) -> None:
        s = self.style
        rows, cols, footprint = _near_segment(s.resolution, 1, start, end, s.thickness / 2 + self.margin)
        self.occupied[rows, cols] |= footprint

    def grow(
        self, tail: np.ndarray, angle: float, n_dashes: int
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """A path of `n_dashes` dashes from `tail`, first heading `angle`; None (grid untouched) if it fails."""
        s = self.style
        head = tail + s.dash_length * _unit(angle)
        if self._collides(tail, head):
            return None
        saved = self.occupied.copy()
        dashes = [(tail, head)]
        half_gap = self.gap / 2
        for _ in range(n_dashes - 1):
            pivot = head + half_gap * _unit(angle)
            heads = pivot + (s.dash_length + half_gap) * self.directions
            turn = np.abs((self.angles - angle + math.pi) % (2 * math.pi) - math.pi)
            weight = np.cos(np.minimum(s.continuity * turn, math.pi / 2)) ** 2
            inside = self._inside(heads)
            cells = np.floor(heads[inside]).astype(int)
            free = np.zeros(len(heads), dtype=bool)
            free[inside] = ~self.occupied[cells[:, 0], cells[:, 1]]
            weight = np.where(free, weight, 0.0)
            for _ in range(s.max_retries + 1):
                total = weight.sum()
                if total <= 1e-12:
                    self.occupied = saved
                    return None
                pick = self.rng.choice(len(weight), p=weight / total)
                start, end = pivot + half_gap * self.directions[pick], heads[pick]
                if not self._collides(start, end):
                    break
                weight[pick] = 0.0
            else:
                self.occupied = saved
                return None
            # the previous dash joins the grid only now, so consecutive dashes never collide with each other
            self._occupy(*dashes[-1])
            dashes.append((start, end))
            head, angle = end, float(self.angles[pick])
        self._occupy(*dashes[-1])
        return dashes

    def random_angle(self) -> float:
        return float(self.rng.uniform(0, 2 * math.pi))


def _target_pair(scene: _Scene, attempts: int = 20) -> tuple[list, list] | None:
    """Two target paths whose first points are `seed_distance` apart, the first seeded near the centre."""
    s, rng = scene.style, scene.rng
    low = min(2 * s.seed_distance, s.resolution / 2 - 1)
    for _ in range(attempts):
        tail_a = rng.uniform(low, s.resolution - low, size=2)
        path_a = scene.grow(tail_a, scene.random_angle(), s.contour_length)
        if path_a is None:
            continue
        for _ in range(attempts):
            tail_b = tail_a + s.seed_distance * _unit(scene.random_angle())
            path_b = scene.grow(tail_b, scene.random_angle(), s.contour_length)
            if path_b is not None:
                return path_a, path_b
        return None  # path A leaves no room for B: start the scene again
    return None


def _distractors(scene: _Scene, tries: int = 4) -> list[list]:
    """`num_distractors` short paths seeded on free pixels; a path that fails `tries` times is left out."""
    s, rng = scene.style, scene.rng
    paths = []
    for _ in range(s.num_distractors):
        free = np.flatnonzero(~scene.occupied)
        if len(free) < 0.01 * scene.occupied.size:
            break
        for _ in range(tries):
            cell = free[rng.integers(len(free))]
            tail = np.array(divmod(int(cell), s.resolution), dtype=float) + rng.uniform(0, 1, size=2)
            path = scene.grow(tail, scene.random_angle(), s.distractor_length)
            if path is not None:
                paths.append(path)
                break
    return paths


def render(
    style: PathfinderStyle, targets: list[list], distractors: list[list], markers: list[np.ndarray]
) -> np.ndarray:
    """Draw dashes and marker discs (max-combined) at antialias× size, average-pool, scale the maximum to 255."""
    aa, size = style.antialias, style.resolution * style.antialias
    canvas = np.zeros((size, size), dtype=np.float32)
    radius = max(style.thickness / 2, 0.5 / aa)
    for paths, value in ((targets, style.target_contrast), (distractors, style.distractor_contrast)):
        for path in paths:
            for start, end in path:
                rows, cols, mask = _near_segment(size, aa, start, end, radius)
                canvas[rows, cols] = np.maximum(canvas[rows, cols], mask * value)
    for centre in markers:
        rows, cols, mask = _near_segment(size, aa, centre, centre, style.marker_radius)
        canvas[rows, cols] = np.maximum(canvas[rows, cols], mask * style.marker_contrast)
    image = canvas.reshape(style.resolution, aa, style.resolution, aa).mean(axis=(1, 3))
    return np.rint(255 * image / image.max()).astype(np.uint8)


def generate_image(
    style: PathfinderStyle, rng: np.random.Generator, label: int | None = None, max_restarts: int = 10_000
) -> tuple[np.ndarray, int, float]:
    """One (uint8 image [R, R], label, margin); label 1 = the two discs lie on the same path."""
    label = int(rng.integers(2)) if label is None else label
    margin = float(rng.choice(style.margins))
    for _ in range(max_restarts):
        scene = _Scene(style, rng, margin)
        pair = _target_pair(scene)
        if pair is not None:
            break
    else:
        raise RuntimeError(
            f"could not place two target paths in {max_restarts} tries with {style}; "
            "lower contour_length or seed_distance"
        )
    distractors = _distractors(scene)
    marked = pair if rng.integers(2) == 0 else pair[::-1]  # which target path carries the start disc
    start = marked[0][0][0]
    end = marked[0][-1][1] if label == 1 else marked[1][-1][1]
    return render(style, list(pair), distractors, [start, end]), label, margin


# --------------------------------------------------------------------------- released layout on disk


def _generate_task(args: tuple[PathfinderStyle, int, int, int]) -> list[tuple[np.ndarray, int, float]]:
    style, seed, task, count = args
    rng = np.random.default_rng([seed, task])
    return [generate_image(style, rng) for _ in range(count)]


def _tasks(num_images: int) -> Iterator[tuple[int, int]]:
    for task, first in enumerate(range(0, num_images, IMAGES_PER_TASK)):
        yield task, min(IMAGES_PER_TASK, num_images - first)


def write_dataset(
    folder: str | Path,
    style: PathfinderStyle,
    num_images: int,
    seed: int = 0,
    images_per_batch: int = 1000,
    workers: int | None = None,
) -> Path:
    """Write `folder/imgs/<batch>/sample_<i>.png` and `folder/metadata/<batch>.npy` as released (the folder is
    `pathfinder<R>/<difficulty>` in the release); returns the folder.

    The images depend on (style, seed, num_images) only, not on `workers`.
    """
    folder = Path(folder)
    workers = max(1, min(workers or os.cpu_count() or 1, math.ceil(num_images / IMAGES_PER_TASK)))
    jobs = [(style, seed, task, count) for task, count in _tasks(num_images)]
    lines: dict[int, list[str]] = {}
    index = 0
    with process_pool(workers) if workers > 1 else InlineExecutor() as pool:
        for samples in pool.map(_generate_task, jobs):
            for image, label, margin in samples:
                batch = index // images_per_batch
                subpath = f"imgs/{batch}"
                (folder / subpath).mkdir(parents=True, exist_ok=True)
                name = f"sample_{index % images_per_batch}.png"
                Image.fromarray(image, mode="L").save(folder / subpath / name, compress_level=1)
                fields = [
                    subpath,
                    name,
                    str(index % images_per_batch),
                    str(label),
                    *style.metadata_fields(margin),
                ]
                lines.setdefault(batch, []).append(" ".join(fields))
                index += 1
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    for batch, batch_lines in lines.items():
        (folder / "metadata" / f"{batch}.npy").write_text("\n".join(batch_lines) + "\n")
    log.info("wrote %d generated Pathfinder images to %s", num_images, folder)
    return folder


class InlineExecutor:
    """`ProcessPoolExecutor.map` in this process (one worker: no start-up cost, easier to debug)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return map(fn, items)
