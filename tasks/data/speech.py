"""Speech Commands SC10, raw waveform (16000 samples at 16 kHz, 10 classes).

Reader of the Speech Commands v0.02 folder layout, the S4/MEGA selection (10 words, only clips of exactly one
second) and split (stratified 70/15/15, or the official list files), normalisation from training statistics, a
synthetic stand-in written in the released layout, and the datamodule. Formats and sources:
docs/data.md#speech-commands; usage: README "Image and Speech Commands data".
"""

from __future__ import annotations

import hashlib
import logging
import wave
from pathlib import Path

import numpy as np
import torch

from tasks.data import download
from tasks.data.arrays import ArrayDataModule

log = logging.getLogger(__name__)

SC10_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # label order of S4/MEGA
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
LIST_FILES = {"val": "validation_list.txt", "test": "testing_list.txt"}
HOW_TO_GET = (
    "`python -m tasks.download speech` (or data.download=true) fetches, verifies and unpacks it; by hand: "
    "download http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz and untar it into "
    "paths.data_dir/speech_commands_v0.02/ (the archive has no top folder), or run with data.synthetic=true for a "
    "stand-in (not the benchmark)"
)


# --------------------------------------------------------------------------- released layout


def read_wav(path: str | Path) -> np.ndarray:
    """A 16-bit PCM mono 16 kHz WAV → int16 samples; anything else is an error naming the file."""
    import soundfile

    path = Path(path)
    try:
        info = soundfile.info(str(path))
    except RuntimeError as err:  # soundfile reports unreadable files as RuntimeError
        raise ValueError(f"{path}: not a readable WAV file ({err})") from err
    problems = []
    if info.subtype != "PCM_16":
        problems.append(f"sample format {info.subtype} (expected PCM_16)")
    if info.channels != 1:
        problems.append(f"{info.channels} channels (expected mono)")
    if info.samplerate != SAMPLE_RATE:
        problems.append(f"{info.samplerate} Hz (expected {SAMPLE_RATE})")
    if problems:
        raise ValueError(f"{path}: {', '.join(problems)}; Speech Commands clips are 16-bit PCM mono 16 kHz")
    samples, _ = soundfile.read(str(path), dtype="int16")
    return samples


def read_sc10(root: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The ten SC10 word folders → (clips int16 [N, 16000], labels int64 [N], relative paths [N]).

    Files are taken in label order and, within a folder, in sorted name order, so the split does not depend on
    `os.listdir` order. Clips shorter than one second are dropped (S4/MEGA); the count is logged.
    """
    root = Path(root)
    clips, labels, names = [], [], []
    dropped = {}
    for label, word in enumerate(SC10_WORDS):
        short = 0
        for path in sorted((root / word).glob("*.wav")):
            samples = read_wav(path)
            if len(samples) != CLIP_SAMPLES:
                if len(samples) > CLIP_SAMPLES:
                    raise ValueError(
                        f"{path}: {len(samples)} samples, longer than a 1 s Speech Commands clip"
                    )
                short += 1
                continue
            clips.append(samples)
            labels.append(label)
            names.append(f"{word}/{path.name}")
        dropped[word] = short
    if not clips:
        raise ValueError(f"{root}: no clip of exactly {CLIP_SAMPLES} samples in {', '.join(SC10_WORDS)}")
    log.info(
        "SC10: kept %d clips of %d samples, dropped %d shorter ones (%s)",
        len(clips),
        CLIP_SAMPLES,
        sum(dropped.values()),
        ", ".join(f"{w} {n}" for w, n in dropped.items()),
    )
    return np.stack(clips), np.asarray(labels, dtype=np.int64), names


# --------------------------------------------------------------------------- splits


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Per-class draw counts as scikit-learn's stratified splitter: floor of the proportional share, leftovers to
    the largest fractional parts, ties broken by `rng` (drawn from the same stream, so later draws stay aligned)."""
    share = class_counts / class_counts.sum() * n_draws
    counts = np.floor(share)
    missing = int(n_draws - counts.sum())
    fraction = share - counts
    for value in np.sort(np.unique(fraction))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(fraction == value)
        take = min(len(tied), missing)
        counts[rng.choice(tied, size=take, replace=False)] += 1
        missing -= take
    return counts.astype(np.int64)


def stratified_split(labels: np.ndarray, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, rest) of a stratified shuffled split with floor(train_size·n) in the first part.

    Follows the draw order of scikit-learn's `train_test_split(..., stratify=labels, random_state=seed)` (one
    `RandomState(seed)`: two tie-breaks, a permutation per class, a final permutation of each part). Written from
    the algorithm's description; equality with scikit-learn's indices is not verified here (it is not installed).
    """
    n = len(labels)
    n_first = int(np.floor(train_size * n))
    n_rest = n - n_first
    classes, class_of = np.unique(labels, return_inverse=True)
    class_counts = np.bincount(class_of)
    if n_first < len(classes) or n_rest < len(classes) or class_counts.min() < 2:
        raise ValueError(
            f"stratified split of {n} clips ({dict(zip(classes.tolist(), class_counts.tolist()))}) at "
            f"{train_size}: every class needs 2+ clips and each part at least one per class"
        )
    members = np.split(np.argsort(class_of, kind="mergesort"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    first_counts = _approximate_mode(class_counts, n_first, rng)
    rest_counts = _approximate_mode(class_counts - first_counts, n_rest, rng)
    first, rest = [], []
    for k in range(len(classes)):
        shuffled = members[k][rng.permutation(class_counts[k])]
        first.extend(shuffled[: first_counts[k]])
        rest.extend(shuffled[first_counts[k] : first_counts[k] + rest_counts[k]])
    return rng.permutation(first), rng.permutation(rest)


def split_stratified(labels: np.ndarray) -> dict[str, np.ndarray]:
    """S4/MEGA's SC10 split: 70 % train (seed 0), then the rest halved into val/test (seed 1), both stratified."""
    train, rest = stratified_split(labels, 0.7, seed=0)
    val, test = stratified_split(labels[rest], 0.5, seed=1)
    return {"train": train, "val": rest[val], "test": rest[test]}


def split_official(root: str | Path, names: list[str]) -> dict[str, np.ndarray]:
    """The speaker-disjoint split of `validation_list.txt` / `testing_list.txt`; every other clip is train."""
    root = Path(root)
    where = {}
    for split, list_name in LIST_FILES.items():
        path = root / list_name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} missing: data.split=official needs the list files of the release"
            )
        for line in path.read_text().splitlines():
            if line.strip():
                where[line.strip()] = split
    assigned = np.array([where.get(name, "train") for name in names])
    return {split: np.flatnonzero(assigned == split) for split in ("train", "val", "test")}


def official_set(name: str, val_percent: float = 10.0, test_percent: float = 10.0) -> str:
    """Which list a clip belongs to in the release (TF's `which_set`): a hash of its speaker id."""
    speaker = Path(name).name.split("_nohash_")[0]
    bucket = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (2**27)
    percent = bucket * 100.0 / (2**27 - 1)
    if percent < val_percent:
        return "val"
    if percent < val_percent + test_percent:
        return "test"
    return "train"


# --------------------------------------------------------------------------- normalisation


def training_statistics(
    clips: np.ndarray, per_step: bool, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of int16/32768 training clips: per time step ([16000] each, S4/MEGA) or global ([1] each)."""
    total = np.zeros(clips.shape[1], dtype=np.float64)
    total_sq = np.zeros(clips.shape[1], dtype=np.float64)
    for start in range(0, len(clips), chunk):
        block = clips[start : start + chunk].astype(np.float64) / 32768.0
        total += block.sum(0)
        total_sq += (block**2).sum(0)
    count = len(clips) if per_step else clips.size
    if not per_step:
        total, total_sq = total.sum(keepdims=True), total_sq.sum(keepdims=True)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


# --------------------------------------------------------------------------- stand-in


def _write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(samples.astype("<i2").tobytes())


def make_standin_clip(label: int, rng: np.random.Generator, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Class k: a tone pair at 200 + 80k Hz and 3× that, under a class-shaped envelope at a random onset, + noise."""
    t = np.arange(length) / SAMPLE_RATE
    f0 = 200.0 + 80.0 * label
    burst = 0.25 + 0.05 * (label % 4)  # seconds
    onset = rng.uniform(0.0, max(0.0, length / SAMPLE_RATE - burst))
    inside = (t >= onset) & (t < onset + burst)
    envelope = np.where(inside, np.sin(np.pi * (t - onset) / burst) ** (1 + label % 3), 0.0)
    tone = np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi)) + 0.5 * np.sin(2 * np.pi * 3 * f0 * t)
    signal = 0.3 * envelope * tone + rng.normal(0.0, 0.02, size=length)
    return np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)


def _standin_speakers(rng: np.random.Generator, wanted: dict[str, int]) -> list[str]:
    """Random 8-hex speaker ids, drawn until each official split has its wanted number of speakers."""
    speakers = []
    while any(wanted.values()):
        speaker = f"{rng.integers(0, 2**32):08x}"
        split = official_set(f"{speaker}_nohash_0.wav")
        if wanted[split] > 0:
            wanted[split] -= 1
            speakers.append(speaker)
    return speakers


def write_standin(root: str | Path, clips_per_word: int = 60, seed: int = 0) -> None:
    """Write a v0.02-style tree of synthetic tones into `root` (NOT Speech Commands).

    The ten SC10 words plus two others, about 10 % of clips shorter than one second, eight speakers, and
    `validation_list.txt` / `testing_list.txt` from the release's speaker hash, so every reader path is exercised.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    speakers = _standin_speakers(rng, {"train": 6, "val": 1, "test": 1})
    lists = {"val": [], "test": []}
    for label, word in enumerate((*SC10_WORDS, "bed", "wow")):
        (root / word).mkdir(parents=True, exist_ok=True)
        for i in range(clips_per_word):
            name = f"{word}/{speakers[i % len(speakers)]}_nohash_{i // len(speakers)}.wav"
            length = CLIP_SAMPLES if rng.random() >= 0.1 else int(rng.integers(8000, CLIP_SAMPLES))
            _write_wav(root / name, make_standin_clip(label % len(SC10_WORDS), rng, length))
            split = official_set(name)
            if split in lists:
                lists[split].append(name)
    (root / "_background_noise_").mkdir(exist_ok=True)
    _write_wav(
        root / "_background_noise_" / "white_noise.wav", rng.normal(0, 3000, SAMPLE_RATE).astype(np.int16)
    )
    for split, list_name in LIST_FILES.items():
        (root / list_name).write_text("".join(f"{name}\n" for name in lists[split]))


# --------------------------------------------------------------------------- datamodule

SPLIT_METHODS = ("stratified", "official")  # S4/MEGA's stratified 70/15/15, or the release's list files
NORMALISATIONS = ("per_step", "global", "none")
STD_EPSILON = 1e-5  # S4/MEGA divide by std + 1e-5


class SpeechDataModule(ArrayDataModule):
    """SC10 raw: 16000 float samples per clip, 10 classes; S4/MEGA's selection, split and normalisation by default.

    split="stratified" (S4/MEGA 70/15/15, seeds 0 then 1) or "official" (validation_list.txt / testing_list.txt);
    normalisation="per_step" (S4/MEGA: a mean and std per time step over the training clips), "global" (one mean
    and std) or "none" (x/32768 only); resolution=r keeps every r-th sample (S4's `resolution`, r kHz → 16/r kHz).
    """

    task = "speech"
    release_folders = ("speech_commands_v0.02", "SpeechCommands/speech_commands_v0.02", "SpeechCommands")
    download_hint = f"To fix: {HOW_TO_GET}"
    standin_description = "synthetic tone bursts written as a v0.02 tree of WAVs"

    def __init__(
        self,
        split: str = "stratified",
        normalisation: str = "per_step",
        resolution: int = 1,
        synthetic_clips_per_word: int = 60,
        **kwargs,
    ) -> None:
        super().__init__(**{"input_kind": "real", "num_classes": 10, "max_length": CLIP_SAMPLES, **kwargs})
        if split not in SPLIT_METHODS:
            raise ValueError(f"data.split={split!r}: choose one of {list(SPLIT_METHODS)}")
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"data.normalisation={normalisation!r}: choose one of {list(NORMALISATIONS)}")
        if resolution < 1 or self.max_length != -(-CLIP_SAMPLES // resolution):
            raise ValueError(
                f"data.max_length={self.max_length} with data.resolution={resolution}: clips are "
                f"{CLIP_SAMPLES} samples, so set data.max_length={-(-CLIP_SAMPLES // max(resolution, 1))}"
            )
        self.split, self.normalisation, self.resolution = split, normalisation, resolution
        self.synthetic_clips_per_word = synthetic_clips_per_word

    def token_options(self) -> dict:
        return {"split": self.split, "normalisation": self.normalisation}

    def synthetic_options(self) -> dict:
        return {"clips_per_word": self.synthetic_clips_per_word, "seed": self.seed}

    def generate(self, folder: Path, synthetic: bool) -> None:
        write_standin(folder, self.synthetic_clips_per_word, seed=self.seed)

    def download_into(self, root: Path) -> None:
        download.download_into(root, download.task_parts("speech"))

    def has_source(self, folder: Path) -> bool:
        return any((folder / word).is_dir() for word in SC10_WORDS)

    def check_folder(self, folder: Path) -> None:
        missing = [word for word in SC10_WORDS if not (folder / word).is_dir()]
        if missing:
            raise FileNotFoundError(f"{folder} has no word folder {', '.join(missing)}. To fix: {HOW_TO_GET}")

    def source_files(self, folder: Path) -> list[Path]:
        # every clip read (size and mtime: a WAV replaced in place changes the cache key) and the list files
        lists = [folder / name for name in LIST_FILES.values() if (folder / name).is_file()]
        return [path for word in SC10_WORDS for path in sorted((folder / word).glob("*.wav"))] + lists

    def read_arrays(self, folder: Path, out: Path) -> dict[str, np.ndarray]:
        """`input` int16 [N, 16000], `label`, the split's row indices, and the training statistics
        `stat_mean` / `stat_std` of x/32768 (per time step [16000], global [1], or 0 / 1 for none)."""
        clips, labels, names = read_sc10(folder)
        rows = split_stratified(labels) if self.split == "stratified" else split_official(folder, names)
        if self.normalisation == "none":
            mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
        else:
            mean, std = training_statistics(clips[np.sort(rows["train"])], self.normalisation == "per_step")
        splits = {f"split_{name}": index for name, index in rows.items()}
        return {"input": clips, "label": labels, **splits, "stat_mean": mean, "stat_std": std}

    def on_setup(self) -> None:
        step = slice(None, None, self.resolution)
        stats = (self.extras["stat_mean"], self.extras["stat_std"])
        self.mean, self.std = (torch.from_numpy(a[step] if a.size > 1 else a) for a in stats)

    def transform(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """int16 samples → (x/32768 − mean)/(std + 1e-5), as S4/MEGA's `normalise_data`; every r-th sample."""
        values = values[:, :: self.resolution] / 32768.0
        return (values - self.mean) / (self.std + STD_EPSILON)
