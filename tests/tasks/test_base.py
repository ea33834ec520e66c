"""The base datamodule's flow (find → download/generate → verify → cache → open) on a toy task, and the loaders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tasks.data.base import SequenceDataModule, hub_snapshots
from tasks.data.loading import ResumableSampler

FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}


class ToyDataModule(SequenceDataModule):
    """One number per line; the label is the number modulo 2."""

    task = "toy"
    release_folders = ("toy-release", "toy")
    split_files = FILES
    standin_description = "three numbers per split"

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"vocab_size": 10, "max_length": 4, "batch_size": 2, **kwargs})
        self.setups = 0

    def read_split(self, folder: Path, split: str):
        for line in (folder / FILES[split]).read_text().split():
            yield {"input": [int(c) for c in line], "label": int(line) % 2}

    def generate(self, folder: Path, synthetic: bool) -> None:
        write_release(folder)

    def download_into(self, root: Path) -> None:
        write_release(root / "toy")

    def on_setup(self) -> None:
        self.setups += 1


def write_release(folder: Path, lines: str = "12 345 6") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        (folder / name).write_text(lines)
    return folder


@pytest.mark.parametrize("prefix", [".", "lra_release", "lra_release/lra_release"])
def test_finds_every_release_prefix(tmp_path: Path, prefix: str) -> None:
    folder = write_release(tmp_path / prefix / "toy")
    assert ToyDataModule(root_dir=str(tmp_path)).raw_folder() == folder


def test_release_dir_is_the_folder_or_one_above_it(tmp_path: Path) -> None:
    folder = write_release(tmp_path / "elsewhere" / "toy-release")
    assert ToyDataModule(root_dir=str(tmp_path), release_dir=str(folder)).raw_folder() == folder
    assert ToyDataModule(root_dir=str(tmp_path), release_dir=str(folder.parent)).raw_folder() == folder


def test_old_option_name_data_dir_still_works_and_says_so(tmp_path: Path, caplog) -> None:
    folder = write_release(tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING), pytest.warns(FutureWarning, match="data.release_dir"):
        module = ToyDataModule(root_dir=str(tmp_path), data_dir=str(folder))
    assert module.raw_folder() == folder and "data.data_dir is deprecated" in caplog.text
    with pytest.raises(ValueError, match="set only data.release_dir"):
        ToyDataModule(root_dir=str(tmp_path), data_dir=str(folder), release_dir=str(tmp_path))


def test_an_incomplete_folder_names_the_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "train.txt").write_text("1")
    with pytest.raises(FileNotFoundError, match="has no val.txt"):
        ToyDataModule(root_dir=str(tmp_path)).raw_folder()
    (folder / "train.txt").unlink()  # an empty folder of the release's name: still named, not skipped
    with pytest.raises(FileNotFoundError, match="has no train.txt"):
        ToyDataModule(root_dir=str(tmp_path)).raw_folder()


def test_missing_data_lists_every_place_searched(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        ToyDataModule(root_dir=str(tmp_path)).raw_folder()
    message = str(error.value)
    assert (
        str(tmp_path / "lra_release" / "lra_release" / "toy") in message and "data.synthetic=true" in message
    )


def test_download_runs_only_when_asked_and_when_absent(tmp_path: Path, caplog) -> None:
    with pytest.raises(FileNotFoundError):
        ToyDataModule(root_dir=str(tmp_path)).raw_folder()
    with caplog.at_level(logging.INFO):
        assert ToyDataModule(root_dir=str(tmp_path), download=True).raw_folder() == tmp_path / "toy"
    assert "downloading it into" in caplog.text
    module = ToyDataModule(root_dir=str(tmp_path), download=True)
    module.download_into = lambda root: pytest.fail("the data are there: no second download")
    assert module.raw_folder() == tmp_path / "toy"


def test_no_downloader_is_a_clear_error(tmp_path: Path) -> None:
    class NoDownloader(ToyDataModule):
        download_into = SequenceDataModule.download_into

    with pytest.raises(FileNotFoundError, match="no downloader for toy data"):
        NoDownloader(root_dir=str(tmp_path), download=True).raw_folder()


def test_standin_is_announced_once_and_never_mixed_with_the_release(tmp_path: Path, caplog) -> None:
    write_release(tmp_path / "toy", "99")
    module = ToyDataModule(root_dir=str(tmp_path), synthetic=True)
    with caplog.at_level(logging.WARNING):
        module.prepare_data()
        module.setup()
    assert caplog.text.count("STAND-IN DATA (data.synthetic=true): toy runs on three numbers per split") == 1
    assert module.raw_folder().parent == tmp_path / "synthetic" and len(module.splits["train"]) == 3


def test_cache_is_keyed_on_source_files_and_opened_by_setup(tmp_path: Path) -> None:
    folder = write_release(tmp_path / "toy")
    module = ToyDataModule(root_dir=str(tmp_path))
    module.prepare_data()
    module.setup()
    module.setup()
    assert module.setups == 1 and [e["input"].tolist() for e in module.splits["val"]] == [
        [1, 2],
        [3, 4, 5],
        [6],
    ]
    first = module.cache_folder(folder)
    stat = (folder / "val.txt").stat()
    os.utime(folder / "val.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a replaced file
    assert module.cache_folder(folder) != first
    with pytest.raises(FileNotFoundError, match="call prepare_data"):
        ToyDataModule(root_dir=str(tmp_path)).setup()


def test_hub_snapshots_in_repo_order(tmp_path: Path) -> None:
    for repo, revision in (("b/two", "r1"), ("a/one", "r2"), ("a/one", "r1")):
        (tmp_path / f"datasets--{repo.replace('/', '--')}" / "snapshots" / revision).mkdir(parents=True)
    found = hub_snapshots(["a/one", "b/two", "c/none"], tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "datasets--a--one/snapshots/r1",
        "datasets--a--one/snapshots/r2",
        "datasets--b--two/snapshots/r1",
    ]


def task_datamodules() -> list[type]:
    import importlib
    import pkgutil

    import tasks.data

    for info in pkgutil.iter_modules(tasks.data.__path__):
        importlib.import_module(f"tasks.data.{info.name}")
    found, todo = [], [SequenceDataModule]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("tasks.data.") and sub.task:  # tasks, not the shared bases
                found.append(sub)
    return found


def test_task_datamodules_override_only_documented_hooks() -> None:
    """The base owns the flow: a task fills in hooks (SequenceDataModule.HOOKS) and its own options."""
    modules = task_datamodules()
    assert {m.__name__ for m in modules} >= {"ListOpsDataModule", "TextDataModule", "PathfinderDataModule"}
    for module in modules:
        parent = module.__mro__[1]
        overridden = {name for name in vars(module) if hasattr(parent, name)} - {
            "__init__",
            "__doc__",
            "__module__",
        }
        assert overridden <= parent.HOOKS, f"{module.__name__} overrides {sorted(overridden - parent.HOOKS)}"


def test_sampler_resumes_mid_epoch() -> None:
    sampler = ResumableSampler(10, batch_size=3, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.batches_done = 2
    assert list(sampler) == full[6:] and len(sampler) == 10
    sampler.set_epoch(3)
    assert sampler.batches_done == 0 and sorted(sampler) == list(range(10)) and list(sampler) != full
