"""Fetch the released data sets, prove they are the right files, and unpack what each task reads where it looks.

`python -m tasks.download <task>|all` (`main` below) and `data.download=true` (each task's `download_into`) both
call `fetch(root, parts)`. For every archive the requested tasks need, in this order:

1. **Disk check** before anything is fetched: the archive (less what a `.part` already holds) plus the estimated
   unpacked size of the parts taken from it must fit in the free space of the data folder (or `max_disk`).
2. **Download** into `<root>/downloads/<name>.part` with a progress bar (size, rate); an interrupted transfer is
   resumed from the `.part` with an HTTP Range request (`If-Range` guards against a file changed on the server),
   mid-transfer failures are retried with back-off, and a host that cannot be reached fails at once (offline).
3. **Verify** size and checksum before anything is unpacked: the published sha256 or md5, or, for
   `lra_release.gz` (no published checksum), the sha256 recorded in `<root>/downloads/manifest.json` on its first
   download (the log says when a value is self-recorded). A mismatch deletes the `.part`: it cannot be repaired.
4. **Unpack** only the folders a task reads (tar members streamed: ListOps takes a few MB of the 8 GB LRA
   archive) into a hidden temporary folder beside the target; **count** the examples with the task's reader
   against the released sizes; only then **rename** it into place. A killed or failed unpack leaves only a hidden
   `.<name>.unpack-<pid>` folder, which no reader looks at and the next run removes.
5. **Record** archive and parts in the manifest; delete the archive unless `keep_archives`.

The expected counts are part of each `Part` (tests pass their own); `None` means no published count (printed only).
Every URL is `<mirror>/<archive name>` when a mirror is given (`--mirror` or `$DATA_MIRROR`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from tasks.data.processes import process_alive

log = logging.getLogger(__name__)

GB = 10**9
CHUNK = 1 << 20
MIRROR_ENV = "DATA_MIRROR"
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx", "speech")
HF_TASKS = ("text", "image")  # tasks with a Hugging Face route (`--source hf`)


class DownloadError(RuntimeError):
    """A step of fetching, verifying, unpacking or checking failed; the message names the file and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# What is fetched: archives, and the parts of them each task reads


@dataclass(frozen=True)
class Archive:
    """A released file. `size`, `sha256`, `md5`: published values (None: not published); `approx_size` sizes the
    disk check when `size` is unknown; `size_range` rejects a file far off the known size when none is published."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    approx_size: int = 0
    size_range: tuple[int, int] | None = None

    def source_url(self, mirror: str | None) -> str:
        return f"{mirror.rstrip('/')}/{self.name}" if mirror else self.url

    @property
    def expected_bytes(self) -> int:
        return self.size or self.approx_size


@dataclass(frozen=True)
class Part:
    """What one task reads: `member`, a folder inside `archive` (matched at any depth, so `lra_release/` and
    `lra_release/lra_release/` prefixes both work; None = the whole archive), unpacked to `<root>/<target>`.
    `write(folder)` replaces the archive for the Hugging Face route. `count(folder)` counts the examples with the
    task's reader; `expected` holds the released counts (None: none published, printed only)."""

    task: str
    target: str
    count: Callable[[Path], dict[str, int]]
    expected: dict[str, int | None]
    archive: Archive | None = None
    member: str | None = None
    unpacked_bytes: int = 0
    write: Callable[[Path], None] | None = None


# The readers' own counts. Imports are local: the task modules import this one for `download_into`.


def count_listops(folder: Path) -> dict[str, int]:
    from tasks.data.listops import SPLIT_FILES, read_tsv

    return {name: sum(1 for _ in read_tsv(folder / name)) for name in SPLIT_FILES.values()}


def count_aan(folder: Path) -> dict[str, int]:
    """Rows (non-empty lines) of each pairs file: the train file is ~8 GB, so lines are counted, not parsed."""
    from tasks.data.retrieval import AAN_FILES

    counts = {}
    for name in AAN_FILES.values():
        rows, last = 0, b"\n"
        with open(folder / name, "rb") as handle:
            while block := handle.read(CHUNK * 8):
                rows += block.count(b"\n")
                last = block[-1:]
        counts[name] = rows + (last != b"\n")
    return counts


def count_imdb(folder: Path) -> dict[str, int]:
    from tasks.data.text import IMDB_SPLITS, imdb_source

    source = imdb_source(folder)
    if source is None:
        raise DownloadError(f"{folder} holds no IMDB copy (expected train/{{neg,pos}}/ or train-*.parquet)")
    return {f"{split} reviews": source.count(split) for split in IMDB_SPLITS}


def count_cifar(folder: Path) -> dict[str, int]:
    from tasks.data.image import read_cifar

    return {f"{split} images": len(labels) for split, (_, labels) in read_cifar(folder).items()}


def count_pathfinder(folder: Path) -> dict[str, int]:
    from tasks.data.pathfinder import read_metadata

    return {"images (metadata lines)": len(read_metadata(folder))}


def count_sc10(folder: Path) -> dict[str, int]:
    """SC10 clips of exactly one second (from the WAV headers), the ones S4/MEGA keep."""
    import soundfile

    from tasks.data.speech import CLIP_SAMPLES, SC10_WORDS

    kept = sum(
        soundfile.info(str(path)).frames == CLIP_SAMPLES
        for word in SC10_WORDS
        for path in (folder / word).glob("*.wav")
    )
    return {"SC10 clips of exactly 1 s": kept}


def write_imdb_from_hf(folder: Path, cache_dir: str | None = None) -> None:
    from tasks.data.text import write_imdb_parquet

    write_imdb_parquet(folder, cache_dir)


def write_cifar_from_hf(folder: Path, cache_dir: str | None = None) -> None:
    import datasets

    datasets.load_dataset("uoft-cs/cifar10", cache_dir=cache_dir).save_to_disk(str(folder))


# The released archives. lra_release.gz: link of the google-research/long-range-arena README; no published size
# or checksum (7.7-8.2 GB reported), so its sha256 is recorded on first download and checked afterwards.
ARCHIVES = {
    "lra": Archive(
        "lra_release.gz",
        "https://storage.googleapis.com/long-range-arena/lra_release.gz",
        approx_size=int(8.2 * GB),
        size_range=(7 * GB, 9 * GB),
    ),
    "imdb": Archive(
        "aclImdb_v1.tar.gz",
        "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
        size=84_125_825,
        sha256="c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe",
    ),
    "cifar": Archive(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        approx_size=171 * 10**6,
    ),
    "speech": Archive(
        "speech_commands_v0.02.tar.gz",
        "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        size=2_428_923_189,
        sha256="af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
    ),
}

# Released counts per task (docs/data.md). AAN eval/test: commonly quoted as 18,090 / 17,437, unverified.
EXPECTED: dict[str, dict[str, int | None]] = {
    "listops": {"basic_train.tsv": 96_000, "basic_val.tsv": 2_000, "basic_test.tsv": 2_000},
    "retrieval": {
        "new_aan_pairs.train.tsv": 147_086,
        "new_aan_pairs.eval.tsv": None,
        "new_aan_pairs.test.tsv": None,
    },
    "text": {"train reviews": 25_000, "test reviews": 25_000},
    "image": {"train images": 50_000, "test images": 10_000},
    "pathfinder": {"images (metadata lines)": 200_000},  # per resolution and difficulty
    "speech": {"SC10 clips of exactly 1 s": 34_975},
}

# Unpacked sizes in GB for the disk check, per folder: estimates with a margin (the whole LRA archive unpacks to
# ~19 GB); Pathfinder per difficulty folder.
UNPACKED_GB = {
    "listops-1000": 0.5,
    "tsv_data": 10.0,
    "aclImdb": 0.5,
    "imdb/plain_text": 0.1,
    "cifar-10-batches-py": 0.2,
    "cifar10": 0.2,
    "speech_commands_v0.02": 4.0,
    "pathfinder32": 1.0,
    "pathfinder64": 1.5,
    "pathfinder128": 2.5,
    "pathfinder256": 6.0,
}


def estimate(folder: str) -> int:
    return int(UNPACKED_GB[folder] * GB)


def pathfinder_part(resolution: int = 32, difficulty: str = "curv_contour_length_14") -> Part:
    """One resolution and difficulty folder of the LRA archive (`difficulty`: the released folder name)."""
    folder = f"pathfinder{resolution}/{difficulty}"
    return Part(
        task="pathx" if resolution == 128 else "pathfinder",
        target=f"lra_release/{folder}",
        count=count_pathfinder,
        expected=EXPECTED["pathfinder"],
        archive=ARCHIVES["lra"],
        member=folder,
        unpacked_bytes=estimate(f"pathfinder{resolution}"),
    )


def task_parts(
    task: str,
    source: str = "archive",
    difficulties: Sequence[str] = ("hard",),
    hf_cache_dir: str | None = None,
) -> list[Part]:
    """The parts `task` reads. `source="hf"`: Text and Image from Hugging Face `datasets` (cache: `hf_cache_dir`)
    instead of their archives; `difficulties` (Pathfinder, Path-X): hard, intermediate, easy or folder names."""
    if source not in ("archive", "hf"):
        raise DownloadError(f"unknown source {source!r}: choose archive or hf")
    if task in ("pathfinder", "pathx"):
        from tasks.data.pathfinder_generator import difficulty_name

        resolution = 128 if task == "pathx" else 32
        return [pathfinder_part(resolution, difficulty_name(d)) for d in difficulties]
    if source == "hf" and task in HF_TASKS:
        hf = {
            "text": Part("text", "imdb/plain_text", count_imdb, EXPECTED["text"], unpacked_bytes=estimate("imdb/plain_text"), write=partial(write_imdb_from_hf, cache_dir=hf_cache_dir)),
            "image": Part("image", "cifar10", count_cifar, EXPECTED["image"], unpacked_bytes=estimate("cifar10"), write=partial(write_cifar_from_hf, cache_dir=hf_cache_dir)),
        }  # fmt: skip
        return [hf[task]]
    lra = ARCHIVES["lra"]
    parts = {
        "listops": Part("listops", "lra_release/listops-1000", count_listops, EXPECTED["listops"], lra, "listops-1000", estimate("listops-1000")),
        "retrieval": Part("retrieval", "lra_release/tsv_data", count_aan, EXPECTED["retrieval"], lra, "tsv_data", estimate("tsv_data")),
        "text": Part("text", "aclImdb", count_imdb, EXPECTED["text"], ARCHIVES["imdb"], "aclImdb", estimate("aclImdb")),
        "image": Part("image", "cifar-10-batches-py", count_cifar, EXPECTED["image"], ARCHIVES["cifar"], "cifar-10-batches-py", estimate("cifar-10-batches-py")),
        # the speech archive has no top folder: all of it goes into speech_commands_v0.02/
        "speech": Part("speech", "speech_commands_v0.02", count_sc10, EXPECTED["speech"], ARCHIVES["speech"], None, estimate("speech_commands_v0.02")),
    }  # fmt: skip
    if task not in parts:
        raise DownloadError(f"unknown task {task!r}: choose from {', '.join(TASKS)} or all")
    return [parts[task]]


# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class CountRow:
    task: str
    folder: Path
    item: str
    found: int
    expected: int | None

    @property
    def status(self) -> str:
        if self.expected is None:
            return "no published count"
        return "ok" if self.found == self.expected else "MISMATCH"


def summary(rows: Sequence[CountRow]) -> str:
    """One table: task, folder, what was counted, found, expected, status."""
    header = ("task", "folder", "counted", "found", "expected", "status")
    cells = [header] + [
        (
            r.task,
            str(r.folder),
            r.item,
            f"{r.found:,}",
            "-" if r.expected is None else f"{r.expected:,}",
            r.status,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i in (3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# ----------------------------------------------------------------------------------------------------------------
# Options, manifest, checksums


@dataclass
class Options:
    """How to fetch. `mirror`: base URL replacing every source (default `$DATA_MIRROR`); `max_disk`: treat the
    disk as having at most this many bytes free; `retries`/`backoff`: mid-transfer failures are retried after
    backoff·2^k seconds (k = 0, 1, ...); `timeout`: connect and read timeouts in seconds."""

    mirror: str | None = field(default_factory=lambda: os.environ.get(MIRROR_ENV) or None)
    keep_archives: bool = False
    max_disk: int | None = None
    retries: int = 5
    backoff: float = 2.0
    timeout: tuple[float, float] = (15.0, 60.0)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """`<root>/downloads/manifest.json`: each archive's URL, size and checksums (and whether they were published
    or recorded here on first download), and each unpacked part with its counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"archives": {}, "parts": {}}
        if path.is_file():
            try:
                self.data = {**self.data, **json.loads(path.read_text())}
            except json.JSONDecodeError as err:
                raise DownloadError(f"{path} is not valid JSON ({err}); fix or delete it") from err

    def archive(self, name: str) -> dict[str, Any] | None:
        return self.data["archives"].get(name)

    def record(self, section: str, key: str, entry: dict[str, Any]) -> None:
        self.data[section][key] = {**self.data[section].get(key, {}), **entry}
        self.save()

    def forget(self, section: str, key: str) -> None:
        self.data[section].pop(key, None)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


class Digests:
    """Size, sha256 and md5 of a byte stream, updated chunk by chunk."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        self._md5.update(chunk)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    @classmethod
    def of_file(cls, path: Path) -> Digests:
        digests = cls()
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK * 8):
                digests.update(chunk)
        return digests


def gigabytes(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB // 100 else f"{n:,} bytes"


def disk_full(err: OSError, where: Path, what: str) -> DownloadError:
    return DownloadError(
        f"disk full while {what} {where} ({err.strerror}); free space on that disk (or point --data-dir / "
        "DATA_DIR at a larger one) and run again: a .part file resumes where it stopped"
    )


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock` (one downloader per archive and data folder)."""
    with open(lock, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"another process is downloading into {lock.parent} ({lock.name} is locked): wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Transient(Exception):
    """A failure worth retrying (connection cut, timeout, HTTP 5xx/429), resumed from the `.part`."""


# ----------------------------------------------------------------------------------------------------------------
# The downloader


class Fetcher:
    """Downloads, verifies and unpacks into `root` (see the module docstring)."""

    def __init__(self, root: Path, options: Options | None = None) -> None:
        self.root = Path(root)
        self.options = options or Options()
        self.downloads = self.root / "downloads"
        self.downloads.mkdir(parents=True, exist_ok=True)
        self.manifest = Manifest(self.downloads / "manifest.json")
        self.session = requests.Session()
        # identity: the bytes of the file as published (a server must not compress or decompress them on the way)
        self.session.headers.update({"User-Agent": "mega-lra-download", "Accept-Encoding": "identity"})

    # ---- disk

    def check_disk(self, groups: Sequence[tuple[Archive | None, list[Part]]]) -> None:
        """Fail before fetching anything when the archives and the unpacked parts cannot fit."""
        running = peak = 0
        needs = []
        for archive, parts in groups:
            fetch = 0
            if archive is not None and not (self.downloads / archive.name).is_file():
                partial = self.downloads / f"{archive.name}.part"
                fetch = max(archive.expected_bytes - (partial.stat().st_size if partial.exists() else 0), 0)
            unpack = sum(p.unpacked_bytes for p in parts)
            peak = max(peak, running + fetch + unpack)
            running += unpack + (fetch if self.options.keep_archives else 0)
            what = archive.name if archive else "Hugging Face"
            needs.append(f"{what}: {gigabytes(fetch)} to download + about {gigabytes(unpack)} unpacked")
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        limit = (
            "free"
            if self.options.max_disk is None
            else f"allowed (--max-disk {gigabytes(self.options.max_disk)})"
        )
        if self.options.max_disk is not None:
            free = min(free, self.options.max_disk)
        if peak > free:
            raise DownloadError(
                f"not enough disk space in {self.root}: this needs about {gigabytes(peak)} at its peak "
                f"({'; '.join(needs)}), and {gigabytes(free)} are {limit}. Free space, or point --data-dir "
                "(paths.data_dir / DATA_DIR) at a larger disk, or fetch fewer tasks at a time"
            )
        log.info("Disk check: about %s needed at the peak, %s %s", gigabytes(peak), gigabytes(free), limit)

    # ---- download

    def archive_file(self, archive: Archive) -> Path:
        """The verified archive in `downloads/`: a kept copy, or downloaded (resuming a `.part`)."""
        final = self.downloads / archive.name
        url = archive.source_url(self.options.mirror)
        with exclusive(self.downloads / f".{archive.name}.lock"):
            if final.is_file():
                log.info("%s: checking the archive kept in %s", archive.name, final)
                self.verify(archive, url, final, Digests.of_file(final))
                return final
            partial = self.downloads / f"{archive.name}.part"
            digests = self.transfer(archive, url, partial)
            self.verify(archive, url, partial, digests)
            os.replace(partial, final)
            partial.with_name(partial.name + ".json").unlink(missing_ok=True)
        return final

    def transfer(self, archive: Archive, url: str, partial: Path) -> Digests:
        """Download `url` into `partial`, resuming what it holds; retry mid-transfer failures."""
        digests = Digests.of_file(partial) if partial.exists() else Digests()
        if digests.size:
            log.info("%s: resuming after %s already in %s", archive.name, gigabytes(digests.size), partial)
        # reached: the server answered once, so a failed connection is worth retrying (else: offline, fail at once)
        attempt, reached = 0, False
        while True:
            try:
                self.request(archive, url, partial, digests, reached)
                return digests
            except Transient as err:
                if attempt == self.options.retries:
                    raise DownloadError(
                        f"{url}: {err}; gave up after {attempt + 1} attempts. {partial} keeps the "
                        f"{gigabytes(digests.size)} received: run the same command again to resume"
                    ) from None
                wait = self.options.backoff * 2**attempt
                log.warning("%s: %s; retrying in %.0f s (resuming from the .part)", archive.name, err, wait)
                time.sleep(wait)
                attempt, reached = attempt + 1, True

    def request(self, archive: Archive, url: str, partial: Path, digests: Digests, reached: bool) -> None:
        """One GET from `digests.size` onwards, appended to `partial`; `Transient` when it should be retried."""
        validators_file = partial.with_name(partial.name + ".json")
        validators = json.loads(validators_file.read_text()) if validators_file.is_file() else {}
        headers = {}
        if digests.size:
            headers["Range"] = f"bytes={digests.size}-"
            etag = validators.get("etag") or ""
            validator = etag if etag and not etag.startswith("W/") else validators.get("last_modified")
            if validator:  # the server sends the whole file instead when it changed since the .part began
                headers["If-Range"] = validator
        try:
            response = self.session.get(url, headers=headers, stream=True, timeout=self.options.timeout)
        except requests.exceptions.ConnectionError as err:  # includes connect timeouts and unknown hosts
            if reached:
                raise Transient(f"connection failed ({err})") from None
            raise DownloadError(unreachable(url, err)) from None  # offline: fail at once, no retry waits
        except requests.exceptions.Timeout:
            raise Transient(f"no answer within {self.options.timeout[1]:.0f} s") from None
        except requests.exceptions.RequestException as err:
            raise DownloadError(f"{url}: {err}") from None
        with response:
            if response.status_code == 416 and digests.size:  # nothing after the offset
                total = validators.get("total")
                if total == digests.size:
                    return
                log.warning(
                    "%s: the server refused to resume at byte %d: starting again", archive.name, digests.size
                )
                partial.unlink()
                digests.reset()
                raise Transient("HTTP 416 on resume")
            if response.status_code in (429,) or response.status_code >= 500:
                raise Transient(f"HTTP {response.status_code} {response.reason}")
            if response.status_code not in (200, 206):
                raise DownloadError(
                    f"{url}: HTTP {response.status_code} {response.reason}. The link may have moved: check it, or "
                    f"set --mirror / ${MIRROR_ENV} to a server that has {archive.name}"
                )
            if response.status_code == 200 and digests.size:
                log.warning(
                    "%s: the server sent the whole file instead of resuming: starting again", archive.name
                )
                partial.unlink()
                digests.reset()
            total = self.total_size(archive, url, response, digests.size)
            validators_file.write_text(
                json.dumps(
                    {
                        "url": url,
                        "total": total,
                        "etag": response.headers.get("ETag"),
                        "last_modified": response.headers.get("Last-Modified"),
                    }
                )
            )
            self.stream(archive, response, partial, digests, total)
        if total is not None and digests.size < total:
            raise Transient(f"connection closed after {digests.size:,} of {total:,} bytes")

    def total_size(self, archive: Archive, url: str, response: requests.Response, offset: int) -> int | None:
        """The file's full size from the response headers, checked against what the archive should be."""
        if response.status_code == 206:
            content_range = response.headers.get("Content-Range", "")
            start = content_range.removeprefix("bytes ").split("-")[0]
            if start != str(offset):
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, got Content-Range {content_range!r}"
                )
            total_text = content_range.rpartition("/")[2]
            total = int(total_text) if total_text.isdigit() else None
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and archive.size is not None and total != archive.size:
            raise DownloadError(
                f"{url} is {total:,} bytes, but {archive.name} is {archive.size:,}: not the released file "
                "(check --mirror)"
            )
        if (
            total is not None
            and archive.size_range
            and not archive.size_range[0] <= total <= archive.size_range[1]
        ):
            low, high = archive.size_range
            raise DownloadError(
                f"{url} is {gigabytes(total)}, outside the {gigabytes(low)}-{gigabytes(high)} known for "
                f"{archive.name}: not the released file (check --mirror)"
            )
        return total

    def stream(
        self,
        archive: Archive,
        response: requests.Response,
        partial: Path,
        digests: Digests,
        total: int | None,
    ) -> None:
        """Append the body to `partial` as it arrives: one socket read at a time, so a cut connection loses no
        byte that was received (the resumed request starts right after it)."""
        bar = tqdm(
            total=total, initial=digests.size, unit="B", unit_scale=True, unit_divisor=1024, desc=archive.name
        )
        try:
            with open(partial, "ab") as handle, bar:
                while True:
                    try:
                        chunk = response.raw.read1(CHUNK, decode_content=False)
                    except (urllib3.exceptions.HTTPError, OSError) as err:  # a cut or timed-out connection
                        raise Transient(f"transfer interrupted ({type(err).__name__})") from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    digests.update(chunk)
                    bar.update(len(chunk))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise disk_full(err, partial, "writing") from None
            raise

    # ---- verify

    def verify(self, archive: Archive, url: str, path: Path, digests: Digests) -> None:
        """Compare with the published size and checksums, else with the sha256 recorded on first download."""
        problems = []
        if archive.size is not None and digests.size != archive.size:
            problems.append(f"size {digests.size:,} bytes, published {archive.size:,}")
        if archive.sha256 and digests.sha256 != archive.sha256:
            problems.append(f"sha256 {digests.sha256}, published {archive.sha256}")
        if archive.md5 and digests.md5 != archive.md5:
            problems.append(f"md5 {digests.md5}, published {archive.md5}")
        recorded = self.manifest.archive(archive.name)
        self_recorded = not (archive.sha256 or archive.md5)
        if self_recorded and recorded and recorded.get("checksum") == "recorded":
            if (digests.size, digests.sha256) != (recorded["size"], recorded["sha256"]):
                problems.append(
                    f"size {digests.size:,} and sha256 {digests.sha256} differ from the values recorded on its first "
                    f"download ({recorded['size']:,} bytes, sha256 {recorded['sha256']}, {recorded['recorded']}): "
                    f"the file on the server changed or one of the downloads is corrupt (to accept this one, delete "
                    f"its entry in {self.manifest.path})"
                )
        if problems:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".json").unlink(missing_ok=True)
            raise DownloadError(
                f"{archive.name} from {url} failed verification: {'; '.join(problems)}. Nothing was unpacked and "
                f"{path} was deleted (a wrong file cannot be resumed); run again to download it afresh, or check "
                "--mirror"
            )
        entry = {
            "url": url,
            "size": digests.size,
            "sha256": digests.sha256,
            "md5": digests.md5,
            "verified": now(),
        }
        if not self_recorded:
            log.info("%s: size and published checksum verified", archive.name)
            entry["checksum"] = "published"
        elif recorded and recorded.get("checksum") == "recorded":
            log.info(
                "%s: verified against the sha256 recorded on its first download (%s); it has no published checksum",
                archive.name,
                recorded["recorded"],
            )
        else:
            log.warning(
                "%s has no published checksum: recorded its size (%s bytes) and sha256 %s in %s; later downloads "
                "are verified against these self-recorded values",
                archive.name,
                f"{digests.size:,}",
                digests.sha256,
                self.manifest.path,
            )
            entry.update(checksum="recorded", recorded=now())
        self.manifest.record("archives", archive.name, entry)

    # ---- unpack, count, place

    def unpack(self, path: Path, archive: Archive, parts: Sequence[Part]) -> dict[str, Path]:
        """Stream the tar members of `parts` into their temporary folders; stop once every folder has been read."""
        staged = {part.target: self.staging(part) for part in parts}
        anchors = {part.target: PurePosixPath(part.member).parts if part.member else () for part in parts}
        entered: set[str] = set()
        left: set[str] = set()
        skipped = []
        try:
            with (
                open(path, "rb") as raw,
                tqdm.wrapattr(
                    raw, "read", total=path.stat().st_size, desc=f"unpacking {archive.name}"
                ) as handle,
                tarfile.open(fileobj=handle, mode="r|*", bufsize=CHUNK) as tar,
            ):
                for member in tar:
                    for target, anchor in anchors.items():
                        relative = inside(member.name, anchor)
                        if relative is None:
                            if target in entered:
                                left.add(target)
                            continue
                        entered.add(target)
                        if not self.extract(tar, member, staged[target], relative):
                            skipped.append(member.name)
                    if all(anchors[t] and t in left for t in anchors):  # tar keeps a folder's files together
                        break
        except (tarfile.TarError, EOFError, OSError) as err:
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise disk_full(err, self.root, "unpacking into") from None
            raise DownloadError(
                f"{path}: not a readable tar archive ({err}); {self.reject(archive, path)}"
            ) from err
        if skipped:
            log.warning(
                "%s: skipped %d member(s) that are not plain files or folders, e.g. %s",
                archive.name,
                len(skipped),
                skipped[0],
            )
        absent = [f"{part.member!r} (for {part.task})" for part in parts if part.target not in entered]
        if absent:
            for folder in staged.values():
                shutil.rmtree(folder, ignore_errors=True)
            raise DownloadError(
                f"{path} has no folder {', '.join(absent)}: not the released archive, or its layout changed; "
                + self.reject(archive, path)
            )
        return staged

    def reject(self, archive: Archive, path: Path) -> str:
        """After a verified archive turned out unusable: what happens to it (said in the error)."""
        recorded = self.manifest.archive(archive.name) or {}
        if recorded.get("checksum") != "recorded":
            return (
                f"it matches the published checksum, so it is kept in {path}: check --mirror or the release"
            )
        path.unlink(missing_ok=True)
        self.manifest.forget("archives", archive.name)
        return (
            "it was deleted with its self-recorded checksum (the first download was not the release either); run "
            "again to download it afresh, or check --mirror"
        )

    @staticmethod
    def extract(tar: tarfile.TarFile, member: tarfile.TarInfo, folder: Path, relative: PurePosixPath) -> bool:
        """Write one member under `folder`; False for members that are neither files nor folders (links, devices)."""
        if relative.is_absolute() or ".." in relative.parts:
            raise DownloadError(f"unsafe path {member.name!r} in the archive: refusing to unpack it")
        destination = folder.joinpath(*relative.parts)
        if member.isdir():
            destination.mkdir(parents=True, exist_ok=True)
            return True
        if not member.isfile():
            return False
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as source, open(destination, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        os.utime(destination, (member.mtime, member.mtime))
        return True

    def staging(self, part: Part) -> Path:
        """A fresh hidden folder beside `<root>/<target>`; stale ones of killed runs are removed first."""
        final = self.root / part.target
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(f".{final.name}.unpack-*"):
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not process_alive(int(pid)):
                log.info("Removing %s, left by an interrupted unpack", stale)
                shutil.rmtree(stale, ignore_errors=True)
        folder = final.parent / f".{final.name}.unpack-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def place(self, part: Part, staged: Path, source: str) -> tuple[list[CountRow], list[str]]:
        """Count the staged folder with the task's reader and rename it into place when the counts are right;
        returns the counts and the problems (a count off the released size: nothing is put in place)."""
        final = self.root / part.target
        try:
            counts = part.count(staged)
        except (ValueError, OSError, DownloadError) as err:
            shutil.rmtree(staged, ignore_errors=True)
            raise DownloadError(f"{part.task}: the reader rejected the unpacked files: {err}") from err
        rows = count_rows(part, final, counts)
        problems = mismatches(rows)
        if problems:
            shutil.rmtree(staged, ignore_errors=True)
            return rows, [*problems, f"not the released {part.task} data: nothing was put in {final}"]
        if final.exists():
            log.info("%s appeared while unpacking; keeping the existing copy", final)
            shutil.rmtree(staged, ignore_errors=True)
        else:
            os.replace(staged, final)
        files = [p for p in final.rglob("*") if p.is_file()]
        self.manifest.record(
            "parts",
            part.target,
            {
                "task": part.task,
                "source": source,
                "files": len(files),
                "bytes": sum(p.stat().st_size for p in files),
                "counts": counts,
                "unpacked": now(),
            },
        )
        log.info("%s: %s is ready", part.task, final)
        return rows, []


def inside(name: str, anchor: tuple[str, ...]) -> PurePosixPath | None:
    """The path of member `name` below the folder `anchor` (anywhere in it), or None when it is not below it."""
    parts = tuple(p for p in PurePosixPath(name.lstrip("/")).parts if p != ".")
    if not anchor:
        return PurePosixPath(*parts) if parts else None
    for start in range(len(parts) - len(anchor) + 1):
        if parts[start : start + len(anchor)] == anchor:
            rest = parts[start + len(anchor) :]
            return PurePosixPath(*rest) if rest else PurePosixPath(".")
    return None


def unreachable(url: str, err: Exception) -> str:
    host = requests.utils.urlparse(url).hostname
    reason = "its name cannot be resolved" if "resolve" in str(err).lower() else "the connection failed"
    return (
        f"cannot reach {host} for {url}: {reason}. Downloading needs the network (are you offline?); behind a "
        f"mirror set --mirror URL or ${MIRROR_ENV}, or get the files by hand (docs/data.md#downloading)"
    )


def count_rows(part: Part, folder: Path, counts: dict[str, int]) -> list[CountRow]:
    items = list(part.expected) + [k for k in counts if k not in part.expected]
    return [CountRow(part.task, folder, item, counts.get(item, 0), part.expected.get(item)) for item in items]


def mismatches(rows: Sequence[CountRow]) -> list[str]:
    return [
        f"{r.folder}: {r.item}: {r.found:,} found, {r.expected:,} expected"
        for r in rows
        if r.status == "MISMATCH"
    ]


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def fetch(root: Path, parts: Sequence[Part], options: Options | None = None) -> list[CountRow]:
    """Make every part present under `root` (download, verify, unpack, check) and count all of them.

    Parts already in place are only counted. Raises `DownloadError` naming the file and the fix; counts that differ
    from the released sizes fail with the whole table, after every archive was processed."""
    fetcher = Fetcher(Path(root), options)
    present = [p for p in parts if (fetcher.root / p.target).exists()]
    groups: list[tuple[Archive | None, list[Part]]] = []
    for part in (p for p in parts if p not in present):
        group = next((g for g in groups if part.archive is not None and g[0] == part.archive), None)
        if group is None:
            groups.append((part.archive, [part]))
        else:
            group[1].append(part)
    if groups:
        fetcher.check_disk(groups)
    rows: list[CountRow] = []
    problems: list[str] = []
    for archive, group in groups:
        group_rows, group_problems = fetch_group(fetcher, archive, group)
        rows, problems = rows + group_rows, problems + group_problems
    for part in present:
        final = fetcher.root / part.target
        log.info("%s: %s is already there (not downloaded); counting it", part.task, final)
        present_rows = count_rows(part, final, part.count(final))
        rows, problems = rows + present_rows, problems + mismatches(present_rows)
    if problems:
        raise DownloadError(summary(rows) + "\n" + "\n".join(problems))
    return rows


def download_into(root: Path, parts: Sequence[Part]) -> None:
    """What a datamodule's `download_into` runs (`data.download=true`): `fetch` with the default options (mirror:
    `$DATA_MIRROR`), the count table logged."""
    log.info("Downloaded data, counted by the readers:\n%s", summary(fetch(root, parts)))


def fetch_group(
    fetcher: Fetcher, archive: Archive | None, parts: list[Part]
) -> tuple[list[CountRow], list[str]]:
    """Parts from one archive (one download, one pass over its members), or one Hugging Face part."""
    if archive is None:
        (part,) = parts
        staged = fetcher.staging(part)
        staged.rmdir()  # the writers create their folder
        log.info("%s: writing %s from Hugging Face datasets", part.task, fetcher.root / part.target)
        try:
            part.write(staged)
        except Exception:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return fetcher.place(part, staged, "huggingface")
    path = fetcher.archive_file(archive)
    staged = fetcher.unpack(path, archive, parts)
    rows, problems = [], []
    try:
        for part in parts:
            part_rows, part_problems = fetcher.place(part, staged[part.target], archive.name)
            rows, problems = rows + part_rows, problems + part_problems
    finally:
        for folder in staged.values():  # placed folders were renamed away; what is left was rejected
            shutil.rmtree(folder, ignore_errors=True)
    if problems:
        problems.append(f"The verified archive is kept: {path}")
    elif fetcher.options.keep_archives:
        log.info("%s: kept in %s (--keep-archives)", archive.name, path)
    else:
        path.unlink()
        log.info(
            "%s: deleted after unpacking (other tasks from it download it again; keep it with --keep-archives, "
            "or fetch them together, e.g. `python -m tasks.download all`)",
            archive.name,
        )
    return rows, problems


def fetch_tasks(
    tasks: Sequence[str],
    root: Path,
    source: str = "archive",
    difficulties: Sequence[str] = ("hard",),
    options: Options | None = None,
    hf_cache_dir: str | None = None,
) -> list[CountRow]:
    """`fetch` the parts of `tasks` (names of `TASKS`): what the command and `data.download=true` run;
    `source="hf"` applies to the tasks that have that route (Text, Image)."""
    parts = []
    for task in tasks:
        parts += task_parts(task, source if task in HF_TASKS else "archive", difficulties, hf_cache_dir)
    return fetch(root, parts, options)


def parse_size(text: str) -> int:
    """`20G`, `500M`, `1.5T` or a byte count."""
    units = {"K": 10**3, "M": 10**6, "G": GB, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 20G, 500M, 123456)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.download",
        description="Download, verify and unpack the released data of a task where its reader looks "
        "(docs/data.md#downloading). The same as data.download=true.",
    )
    parser.add_argument(
        "tasks", nargs="+", choices=[*TASKS, "all"], metavar="TASK", help=f"{' | '.join(TASKS)} | all"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", "data")),
        help="paths.data_dir (default: $DATA_DIR or ./data)",
    )
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep the archives in <data-dir>/downloads/"
    )
    parser.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV),
        help=f"base URL replacing every source (default: ${MIRROR_ENV})",
    )
    parser.add_argument(
        "--source",
        choices=("archive", "hf"),
        default="archive",
        help="hf: Text and Image from Hugging Face datasets",
    )
    parser.add_argument(
        "--difficulty",
        default="hard",
        help="Pathfinder/Path-X: hard, intermediate, easy, comma-separated, or all",
    )
    parser.add_argument(
        "--max-disk", type=parse_size, help="use at most this much disk (e.g. 20G); default: the free space"
    )
    parser.add_argument(
        "--retries", type=int, default=5, help="retries of an interrupted transfer (default 5)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = list(TASKS) if "all" in args.tasks else list(dict.fromkeys(args.tasks))
    difficulties = (
        ("easy", "intermediate", "hard") if args.difficulty == "all" else args.difficulty.split(",")
    )
    options = Options(
        mirror=args.mirror, keep_archives=args.keep_archives, max_disk=args.max_disk, retries=args.retries
    )
    try:
        rows = fetch_tasks(tasks, args.data_dir, args.source, difficulties, options)
    except (DownloadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(rows))
    return 0
