"""Caches are verified when opened (meta.json records sizes, checksums, label and token ranges); damaged ones are
rebuilt by prepare_data or named by setup; temporary folders of killed writers are removed by the next run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from tasks.data.arrays import ArrayDataModule
from tasks.data.base import SPLITS, TEMPORARY, remove_stale_temporaries, write_atomically
from tests.tasks.test_base import ToyDataModule, write_release

ROOT = Path(__file__).resolve().parents[2]


class ToyArrays(ArrayDataModule):
    """Eight rows of four uint8 values; label = first value modulo 3."""

    task = "toyarrays"
    release_folders = ("toyarrays",)
    split_files = {"train": "values.npy", "val": "values.npy", "test": "values.npy"}

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"input_kind": "real", "num_classes": 3, "max_length": 4, **kwargs})

    def read_arrays(self, folder: Path, out: Path) -> dict[str, np.ndarray]:
        values = np.load(folder / "values.npy")
        rows = np.arange(len(values))
        return {
            "input": values,
            "label": (values[:, 0] % 3).astype(np.int64),
            "split_train": rows[:4],
            "split_val": rows[4:6],
            "split_test": rows[6:],
        }


def cached(module, tmp_path: Path) -> Path:
    module.prepare_data()
    return module.cache_folder(module.raw_folder())


def toy(tmp_path: Path, **kwargs) -> ToyDataModule:
    if not (tmp_path / "toy").exists():
        write_release(tmp_path / "toy", "12 345 6 78 9")
    return ToyDataModule(root_dir=str(tmp_path), **kwargs)


def toy_arrays(tmp_path: Path, **kwargs) -> ToyArrays:
    if not (tmp_path / "toyarrays").exists():
        (tmp_path / "toyarrays").mkdir()
        np.save(tmp_path / "toyarrays" / "values.npy", np.arange(32, dtype=np.uint8).reshape(8, 4))
    return ToyArrays(root_dir=str(tmp_path), **kwargs)


def edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def arrow_file(cache: Path, split: str = "train") -> Path:
    return next((cache / "dataset" / split).glob("*.arrow"))


def test_meta_json_records_what_setup_checks(tmp_path: Path) -> None:
    cache = cached(toy(tmp_path), tmp_path)
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["splits"]["train"]["labels"] == [0, 1] and meta["splits"]["train"]["tokens"] == [1, 9]
    record = meta["files"][str(arrow_file(cache).relative_to(cache))]
    assert record["size"] == arrow_file(cache).stat().st_size and len(record["sha256"]) == 64


@pytest.mark.parametrize(
    "make, damage, reason",
    [
        (toy, lambda c: os.truncate(arrow_file(c), 100), "arrow has 100 bytes, .* when it was written"),
        (toy, lambda c: (c / "meta.json").unlink(), "no meta.json"),
        (toy, lambda c: edit(c / "dataset" / "dataset_dict.json", "splits", "SPLITS"), "the contents of"),
        (toy, lambda c: arrow_file(c, "val").unlink(), "arrow is missing"),
        (toy_arrays, lambda c: os.truncate(c / "input.npy", 100), "input.npy has 100 bytes"),
        (toy_arrays, lambda c: np.save(c / "label.npy", np.full(8, 7)), "the contents of label.npy"),
        (toy_arrays, lambda c: (c / "split_val.npy").unlink(), "split_val.npy is missing"),
    ],
    ids=[
        "truncated-arrow",
        "deleted-meta",
        "edited-small-file",
        "deleted-arrow",
        "truncated-input-npy",
        "labels-outside-the-classes",
        "deleted-split",
    ],
)
def test_a_damaged_cache_is_named_by_setup_and_rebuilt_by_prepare_data(
    tmp_path: Path, caplog, make, damage, reason: str
) -> None:
    cache = cached(make(tmp_path), tmp_path)
    counts = {
        split: stats["examples"]
        for split, stats in json.loads((cache / "meta.json").read_text())["splits"].items()
    }
    damage(cache)
    with pytest.raises(ValueError, match=f"cache {cache} is damaged \\(.*{reason}.*\\): delete that folder"):
        make(tmp_path).setup()
    module = make(tmp_path)
    with caplog.at_level(logging.WARNING):
        module.prepare_data()
    assert f"cache {cache} is damaged" in caplog.text and "building it again" in caplog.text
    module.setup()
    assert {split: len(module.splits[split]) for split in SPLITS} == counts


def test_changed_labels_of_the_same_size_are_found(tmp_path: Path, monkeypatch) -> None:
    cache = cached(toy(tmp_path), tmp_path)
    monkeypatch.setattr("tasks.data.base.SMALL_FILE", 0)  # as for a big table: only its labels are read
    original = datasets.load_from_disk(str(cache / "dataset"))
    flipped = original["train"].map(lambda e: {"label": 1 - e["label"]}, keep_in_memory=True)
    flipped.save_to_disk(str(tmp_path / "flipped"))
    target = arrow_file(cache)
    replacement = next((tmp_path / "flipped").glob("*.arrow"))
    assert replacement.stat().st_size == target.stat().st_size  # only the contents differ
    shutil.copyfile(replacement, target)
    with pytest.raises(ValueError, match="the train labels changed since they were written"):
        toy(tmp_path).setup()


def test_full_verification_finds_a_flipped_byte_that_sizes_miss(tmp_path: Path, monkeypatch) -> None:
    cache = cached(toy(tmp_path), tmp_path)
    monkeypatch.setattr(
        "tasks.data.base.SMALL_FILE", 0
    )  # every file counts as big: only sizes at every setup
    target = arrow_file(cache)
    tokens = np.array([3, 4, 5], dtype="<i4").tobytes()  # the row "345", as stored
    target.write_bytes(target.read_bytes().replace(tokens, np.array([3, 8, 5], dtype="<i4").tobytes()))
    toy(tmp_path).setup()  # quick: sizes, row counts and labels agree
    with pytest.raises(ValueError, match="contents of .*arrow changed since it was written"):
        toy(tmp_path, verify_cache="full").setup()
    with pytest.raises(ValueError, match="data.verify_cache='everything'"):
        toy(tmp_path, verify_cache="everything")


def test_labels_and_tokens_outside_the_config_are_a_config_error(tmp_path: Path) -> None:
    cached(toy(tmp_path), tmp_path)
    with pytest.raises(
        ValueError, match=r"train labels cached in .* range over 0..1, but data.num_classes=1"
    ):
        toy(tmp_path, num_classes=1).setup()
    with pytest.raises(ValueError, match=r"train tokens cached in .* range over 1..9, but data.vocab_size=5"):
        toy(tmp_path, vocab_size=5).setup()


def test_array_shapes_are_checked(tmp_path: Path, monkeypatch) -> None:
    cache = cached(toy_arrays(tmp_path), tmp_path)
    monkeypatch.setattr("tasks.data.base.SMALL_FILE", 0)  # as for a big input.npy: its size and header only
    size = (cache / "input.npy").stat().st_size
    np.save(cache / "input.npy", np.zeros((4, 8), dtype=np.uint8))  # the same bytes in another shape
    assert (cache / "input.npy").stat().st_size == size
    with pytest.raises(ValueError, match=r"input.npy is uint8 \[4, 8\], uint8 \[8, 4\] when written"):
        toy_arrays(tmp_path).setup()


def test_every_split_records_its_label_range(tmp_path: Path) -> None:
    meta = json.loads((cached(toy_arrays(tmp_path), tmp_path) / "meta.json").read_text())
    assert {s: meta["splits"][s]["labels"] for s in SPLITS} == {
        "train": [0, 2],
        "val": [1, 2],
        "test": [0, 1],
    }
    assert meta["arrays"]["input"] == {"shape": [8, 4], "dtype": "uint8"}


# ---- temporary folders of killed writers ------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporary_folders_of_dead_writers_are_removed(tmp_path: Path, caplog) -> None:
    host = socket.gethostname()
    dead = tmp_path / f".toy-abc.tmp-{host}-{dead_pid()}-0123abcd"
    alive = tmp_path / f".toy-def.tmp-{host}-{os.getpid()}-0123abcd"
    elsewhere = tmp_path / ".toy-ghi.tmp-other-host-1-0123abcd"
    old = tmp_path / ".toy-jkl.tmp-0123abcd"
    for folder in (dead, alive, elsewhere, old):
        (folder / "part").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        remove_stale_temporaries(tmp_path)
    assert not dead.exists() and alive.exists() and elsewhere.exists() and old.exists()
    assert f"Removing {dead}: left by process" in caplog.text and "toy-abc" in caplog.text
    assert f"{old} is a temporary folder of an older version" in caplog.text


def test_the_temporary_folder_names_its_writer(tmp_path: Path) -> None:
    names = []
    write_atomically(tmp_path / "toy-1", lambda tmp: names.append(tmp.name) or tmp.mkdir())
    owner = TEMPORARY.fullmatch(names[0])
    assert owner and owner["name"] == "toy-1" and owner["host"] == socket.gethostname()
    assert int(owner["pid"]) == os.getpid() and (tmp_path / "toy-1").is_dir()


@pytest.mark.slow  # the writer imports the data layer (Lightning, datasets): 15-20 s on a busy machine
def test_a_writer_killed_mid_write_leaves_a_folder_the_next_write_removes(tmp_path: Path, caplog) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from tasks.data.base import write_atomically

        def write(tmp):
            (tmp / "half").mkdir(parents=True)
            print("writing", flush=True)
            time.sleep(60)

        write_atomically(Path({str(tmp_path / "cache" / "toy-1")!r}), write)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (left,) = (tmp_path / "cache").glob(".toy-1.tmp-*")
    assert f"-{writer.pid}-" in left.name
    with caplog.at_level(logging.WARNING):
        write_atomically(tmp_path / "cache" / "toy-2", lambda tmp: tmp.mkdir())
    assert not left.exists() and (tmp_path / "cache" / "toy-2").is_dir()
    assert f"left by process {writer.pid}" in caplog.text


def test_prepare_data_cleans_the_cache_folder(tmp_path: Path) -> None:
    stale = tmp_path / "cache" / f".toy-x.tmp-{socket.gethostname()}-{dead_pid()}-0123abcd"
    stale.mkdir(parents=True)
    toy(tmp_path).prepare_data()
    assert not stale.exists()


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time
        from tasks.data.processes import process_pool

        def nap(_):
            time.sleep(60)

        pool = process_pool(2)
        futures = [pool.submit(nap, i) for i in range(2)]
        time.sleep(0.5)
        print(" ".join(str(p) for p in pool._processes), flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30  # they check their parent once a second
    while any(map(running, workers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(running, workers)), "workers outlived their killed parent"


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be collected has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
