"""The downloader (tasks/data/download.py) against a loopback HTTP server on 127.0.0.1 serving small archives built
here in each release's layout: complete downloads, cut connections resumed, wrong checksums, server errors, a full
disk, an unreachable host, atomic unpacking, and `train.py data.download=true` training on what it fetched."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.data import download
from tasks.data import pathfinder_generator as generator
from tasks.data.download import Archive, DownloadError, Options, fetch, task_parts
from tasks.data.image import ImageDataModule
from tasks.data.image import write_standin as write_cifar_standin
from tasks.data.listops import ListOpsDataModule, write_tsv
from tasks.data.pathfinder import PathfinderDataModule
from tasks.data.retrieval import RetrievalDataModule, write_standin_aan
from tasks.data.speech import SpeechDataModule, read_sc10
from tasks.data.speech import write_standin as write_speech_standin
from tasks.data.text import TextDataModule, write_standin_imdb

# ---------------------------------------------------------------------------------------------------------------
# A loopback file server with Range support, failure injection and byte accounting


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    sent: Counter = field(default_factory=Counter)  # body bytes sent per file
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (file, Range header)
    cut_after: dict[str, int] = field(default_factory=dict)  # the next response of a file stops after N bytes
    errors: dict[str, list[int]] = field(default_factory=dict)  # statuses answered before serving a file
    ranges: bool = True  # False: Range headers are ignored (whole file, 200)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: ServerState

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        name, state = self.path.lstrip("/"), self.state
        state.requests.append((name, self.headers.get("Range")))
        if state.errors.get(name):
            self.send_error(state.errors[name].pop(0))
            return
        if name not in state.files:
            self.send_error(404)
            return
        data, start = state.files[name], 0
        wanted = self.headers.get("Range")
        if wanted and state.ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.end_headers()
        cut = state.cut_after.pop(name, None)
        if cut is not None:  # the connection drops in the middle of the body
            body = body[:cut]
            self.close_connection = True
        self.wfile.write(body)
        state.sent[name] += len(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    state = ServerState()
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# ---------------------------------------------------------------------------------------------------------------
# Small archives in the released layouts


def tar_gz(entries: dict[str, Path]) -> bytes:
    """A .tar.gz holding each folder (or file) under its archive name, as `tar czf` writes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in entries.items():
            tar.add(path, arcname=name)
    return buffer.getvalue()


@dataclass
class Release:
    data: bytes
    counts: dict[str, dict[str, int]]  # task -> item -> count, the expected counts of this tiny release

    def archive(self, name: str, **published: object) -> Archive:
        return Archive(name, f"http://unused.invalid/{name}", **published)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Release]:
    """Tiny archives: lra_release.gz (doubled top folder, ListOps, AAN, Pathfinder 32 and 128, a folder no task
    reads), aclImdb_v1.tar.gz, cifar-10-python.tar.gz and speech_commands_v0.02.tar.gz (no top folder)."""
    src = tmp_path_factory.mktemp("release-sources")
    lra = src / "lra_release" / "lra_release"
    (lra / "listops-1000").mkdir(parents=True)
    sizes = {"basic_train.tsv": 12, "basic_val.tsv": 3, "basic_test.tsv": 4}
    for name, n in sizes.items():
        write_tsv(lra / "listops-1000" / name, [(f"( [MAX {i % 10} 3 ] )", max(i % 10, 3)) for i in range(n)])
    write_standin_aan(lra / "tsv_data", num_train=6, num_eval=4, seed=0, max_bytes=200)
    for resolution in (32, 128):
        folder = lra / f"pathfinder{resolution}" / "curv_contour_length_14"
        generator.write_dataset(folder, generator.style_for(resolution, "hard"), 5, seed=0, workers=1)
    generator.write_dataset(
        lra / "pathfinder32" / "curv_baseline", generator.style_for(32, "easy"), 3, workers=1
    )
    write_standin_imdb(src / "aclImdb", num_train=6, num_test=4, seed=0, max_bytes=300)
    (src / "aclImdb" / "train" / "unsup").mkdir()
    (src / "aclImdb" / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    write_cifar_standin(src / "cifar-10-batches-py", train_size=20, test_size=10)
    write_speech_standin(src / "speech", clips_per_word=2)
    aan = {"new_aan_pairs.train.tsv": 6, "new_aan_pairs.eval.tsv": 4, "new_aan_pairs.test.tsv": 4}
    return {
        "lra": Release(
            tar_gz({"lra_release": src / "lra_release"}),
            {
                "listops": sizes,
                "retrieval": aan,
                "pathfinder": {"images (metadata lines)": 5},
            },
        ),
        "imdb": Release(
            tar_gz({"aclImdb": src / "aclImdb"}), {"text": {"train reviews": 6, "test reviews": 4}}
        ),
        "cifar": Release(
            tar_gz({"cifar-10-batches-py": src / "cifar-10-batches-py"}),
            {"image": {"train images": 20, "test images": 10}},
        ),
        "speech": Release(
            tar_gz({"./" + p.name: p for p in sorted((src / "speech").iterdir())}),
            {"speech": {"SC10 clips of exactly 1 s": len(read_sc10(src / "speech")[1])}},
        ),
    }


NAMES = {
    "lra": "lra_release.gz",
    "imdb": "aclImdb_v1.tar.gz",
    "cifar": "cifar-10-python.tar.gz",
    "speech": "speech_commands_v0.02.tar.gz",
}


@pytest.fixture
def tiny_registry(monkeypatch, server, releases):
    """Point the registry at the tiny releases (published checksums as the real ones have: none for LRA, md5
    for CIFAR, size + sha256 for IMDB and Speech) and serve them; returns the server's state."""
    url, state = server
    for key, release in releases.items():
        name = NAMES[key]
        state.files[name] = release.data
        published = {
            "lra": {},
            "cifar": {"md5": hashlib.md5(release.data).hexdigest()},
        }.get(key, {"size": len(release.data), "sha256": sha256(release.data)})
        monkeypatch.setitem(download.ARCHIVES, key, release.archive(name, **published))
        for task, counts in release.counts.items():
            monkeypatch.setitem(download.EXPECTED, task, counts)
    monkeypatch.setattr(download, "UNPACKED_GB", defaultdict(float))  # the disk check sees tiny archives only
    monkeypatch.setenv(download.MIRROR_ENV, url)
    return state


def options(url: str, **kwargs: object) -> Options:
    return Options(mirror=url, backoff=0.0, **kwargs)


def statuses(table: str) -> list[str]:
    return [line.split()[-1] for line in table.splitlines()[2:]]


def listops_part() -> download.Part:
    (part,) = task_parts("listops")
    return part


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_all_downloads_once_per_archive_and_unpacks_where_the_readers_look(tiny_registry, tmp_path, capsys):
    root = tmp_path / "data"
    assert download.main(["all", "--data-dir", str(root)]) == 0
    table = capsys.readouterr().out
    assert statuses(table) == ["ok"] * 13  # every count of the 7 tasks
    for name, data in tiny_registry.files.items():
        assert tiny_registry.sent[name] == len(data), f"{name} fetched once, not more"
    # each datamodule's own search finds what was unpacked
    assert ListOpsDataModule(root_dir=str(root)).raw_folder() == root / "lra_release" / "listops-1000"
    assert (
        RetrievalDataModule(root_dir=str(root), dual_encoder=True, vocab_size=257).raw_folder()
        == root / "lra_release/tsv_data"
    )
    assert (
        TextDataModule(root_dir=str(root), vocab_size=257, hub_cache=str(tmp_path / "hub")).raw_folder()
        == root / "aclImdb"
    )
    image = ImageDataModule(root_dir=str(root), hub_cache=str(tmp_path / "hub"))
    assert image.raw_folder() == root / "cifar-10-batches-py"
    for resolution in (32, 128):
        found = PathfinderDataModule(root_dir=str(root), resolution=resolution, max_length=resolution**2)
        assert found.raw_folder() == root / f"lra_release/pathfinder{resolution}/curv_contour_length_14"
    assert SpeechDataModule(root_dir=str(root)).raw_folder() == root / "speech_commands_v0.02"
    assert (root / "speech_commands_v0.02" / "yes").is_dir() and (root / "aclImdb/train/unsup").is_dir()
    assert not (root / "lra_release" / "pathfinder32" / "curv_baseline").exists()  # only what a task reads
    assert not [p for p in root.rglob(".*unpack-*")]
    downloads = sorted(p.name for p in (root / "downloads").iterdir() if not p.name.startswith("."))
    assert downloads == ["manifest.json"]  # archives deleted after unpacking (no --keep-archives)
    manifest = json.loads((root / "downloads" / "manifest.json").read_text())
    lra = manifest["archives"]["lra_release.gz"]
    assert lra["checksum"] == "recorded" and lra["sha256"] == sha256(tiny_registry.files["lra_release.gz"])
    assert manifest["archives"]["aclImdb_v1.tar.gz"]["checksum"] == "published"
    assert manifest["parts"]["lra_release/listops-1000"]["counts"] == {
        "basic_train.tsv": 12,
        "basic_val.tsv": 3,
        "basic_test.tsv": 4,
    }
    # a second run finds everything in place: counts it, fetches nothing
    requests_before = len(tiny_registry.requests)
    assert download.main(["all", "--data-dir", str(root)]) == 0
    assert len(tiny_registry.requests) == requests_before and statuses(capsys.readouterr().out) == ["ok"] * 13


def test_cut_connection_is_resumed_without_fetching_bytes_twice(tiny_registry, server, tmp_path):
    url, state = server
    name, size = "aclImdb_v1.tar.gz", len(tiny_registry.files["aclImdb_v1.tar.gz"])
    state.cut_after[name] = size // 2
    rows = fetch(tmp_path, task_parts("text"), options(url))
    assert [r.status for r in rows] == ["ok", "ok"]
    assert state.sent[name] == size
    assert state.requests == [(name, None), (name, f"bytes={size // 2}-")]


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(tiny_registry, server, tmp_path):
    url, state = server
    name, size = "aclImdb_v1.tar.gz", len(tiny_registry.files["aclImdb_v1.tar.gz"])
    state.cut_after[name] = 1000
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(tmp_path, task_parts("text"), options(url, retries=0))
    assert (tmp_path / "downloads" / f"{name}.part").stat().st_size == 1000
    assert not (tmp_path / "aclImdb").exists()
    fetch(tmp_path, task_parts("text"), options(url))
    assert state.sent[name] == size and state.requests[-1] == (name, "bytes=1000-")
    assert not (tmp_path / "downloads" / f"{name}.part").exists()


def test_a_server_that_ignores_ranges_restarts_the_file(tiny_registry, server, tmp_path):
    url, state = server
    name = "aclImdb_v1.tar.gz"
    state.cut_after[name], state.ranges = 1000, False
    fetch(tmp_path, task_parts("text"), options(url))  # the 200 answer to the Range request restarts cleanly
    assert state.sent[name] == 1000 + len(tiny_registry.files[name])


def test_wrong_checksum_is_a_clear_error_and_nothing_is_unpacked(
    tiny_registry, server, tmp_path, monkeypatch
):
    url, _ = server
    bad = replace(download.ARCHIVES["imdb"], sha256="0" * 64)
    monkeypatch.setitem(download.ARCHIVES, "imdb", bad)
    with pytest.raises(DownloadError, match=r"failed verification: sha256 \w+, published 0{64}") as error:
        fetch(tmp_path, task_parts("text"), options(url))
    assert "Nothing was unpacked" in str(error.value) and "was deleted" in str(error.value)
    assert not (tmp_path / "aclImdb").exists() and not list(tmp_path.glob(".aclImdb.unpack-*"))
    assert not (
        tmp_path / "downloads" / "aclImdb_v1.tar.gz.part"
    ).exists()  # documented: a wrong file is deleted


def test_server_errors_are_retried_then_reported(tiny_registry, server, tmp_path):
    url, state = server
    name = "aclImdb_v1.tar.gz"
    state.errors[name] = [503, 500]
    fetch(tmp_path / "a", task_parts("text"), options(url))  # two 5xx, then served
    state.errors[name] = [500] * 5
    with pytest.raises(DownloadError, match=r"HTTP 500 .*gave up after 3 attempts"):
        fetch(tmp_path / "b", task_parts("text"), options(url, retries=2))
    requests_before = len(state.requests)
    with pytest.raises(DownloadError, match=r"HTTP 404 .*--mirror"):
        fetch(tmp_path / "c", task_parts("text"), options(url + "/moved"))
    assert len(state.requests) == requests_before + 1  # not worth retrying


def test_too_little_disk_fails_before_fetching(tiny_registry, server, tmp_path):
    url, state = server
    with pytest.raises(DownloadError, match=r"not enough disk space .*--max-disk"):
        fetch(tmp_path, task_parts("text"), options(url, max_disk=1000))
    assert state.requests == []


def test_unreachable_host_fails_at_once(tiny_registry, tmp_path, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(
        download.time, "sleep", lambda s: pytest.fail("no retry waits when the host is unreachable")
    )
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1 .*offline.*--mirror"):
        fetch(tmp_path, task_parts("text"), options(f"http://127.0.0.1:{port}"))


def test_lra_checksum_is_recorded_then_verified(tiny_registry, server, tmp_path, caplog):
    url, state = server
    caplog.set_level("INFO")
    fetch(tmp_path, [listops_part()], options(url))
    assert "has no published checksum: recorded its size" in caplog.text
    caplog.clear()
    (tmp_path / "lra_release" / "listops-1000").rename(tmp_path / "elsewhere")
    fetch(tmp_path, [listops_part()], options(url))
    assert "verified against the sha256 recorded on its first download" in caplog.text
    (tmp_path / "lra_release" / "listops-1000").rename(tmp_path / "elsewhere-2")
    state.files["lra_release.gz"] = state.files["lra_release.gz"] + b"\0" * 512  # another file on the server
    with pytest.raises(DownloadError, match="differ from the values recorded on its first download"):
        fetch(tmp_path, [listops_part()], options(url))
    assert not (tmp_path / "lra_release" / "listops-1000").exists()


def test_count_off_the_released_size_names_the_file_and_places_nothing(tiny_registry, server, tmp_path):
    url, _ = server
    part = replace(listops_part(), expected={**listops_part().expected, "basic_train.tsv": 96_000})
    with pytest.raises(DownloadError, match=r"basic_train.tsv: 12 found, 96,000 expected") as error:
        fetch(tmp_path, [part], options(url))
    assert "MISMATCH" in str(error.value) and "nothing was put in" in str(error.value)
    assert not (tmp_path / "lra_release" / "listops-1000").exists()
    assert (tmp_path / "downloads" / "lra_release.gz").is_file()  # verified: kept for a rerun


def test_killed_unpack_leaves_nothing_the_readers_find(tiny_registry, server, tmp_path, monkeypatch):
    url, _ = server
    extract = download.Fetcher.extract

    def killed(*args):
        raise KeyboardInterrupt  # like a kill in the middle of the unpacking

    monkeypatch.setattr(download.Fetcher, "extract", staticmethod(killed))
    with pytest.raises(KeyboardInterrupt):
        fetch(tmp_path, [listops_part()], options(url, keep_archives=True))
    assert list((tmp_path / "lra_release").glob(".listops-1000.unpack-*"))  # hidden: no reader looks there
    module = ListOpsDataModule(root_dir=str(tmp_path))
    assert not [f for f in module.candidate_folders() if f.is_dir() and module.has_source(f)]
    monkeypatch.setattr(download.Fetcher, "extract", staticmethod(extract))
    stale = tmp_path / "lra_release" / ".listops-1000.unpack-999999999"  # of a process that is gone
    stale.mkdir()
    fetch(tmp_path, [listops_part()], options(url))
    assert not list((tmp_path / "lra_release").glob(".listops-1000.unpack-*"))
    assert module.raw_folder() == tmp_path / "lra_release" / "listops-1000"


def test_unsafe_member_paths_are_refused(server, tmp_path):
    url, state = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("lra_release/listops-1000/../../../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    state.files["evil.tar.gz"] = buffer.getvalue()
    part = replace(listops_part(), archive=Archive("evil.tar.gz", "http://unused.invalid/evil.tar.gz"))
    with pytest.raises(DownloadError, match="unsafe path"):
        fetch(tmp_path / "data", [part], options(url))
    assert not (tmp_path / "escaped.txt").exists()


def test_train_with_data_download_trains_on_the_fetched_files(tiny_registry, tmp_path):
    from tests.conftest import compose_config
    from tests.test_train import run

    root = tmp_path / "data"
    overrides = ["debug=smoke", "data.synthetic=false", "data.download=true", "data.num_workers=0"]
    results = run(compose_config(overrides, tmp_path / "run", root))
    assert "test/acc" in results
    (cache,) = (root / "cache").glob("listops-*")
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["key"]["source"] == str((root / "lra_release" / "listops-1000").resolve())
    assert meta["splits"]["train"]["examples"] == 12
    assert tiny_registry.sent["lra_release.gz"] == len(tiny_registry.files["lra_release.gz"])
    assert not (root / "listops-1000").exists()  # the generator did not run


def test_an_unusable_lra_archive_is_dropped_with_its_self_recorded_checksum(tiny_registry, server, tmp_path):
    url, state = server
    state.files["lra_release.gz"] = b"<html>not found</html>"  # e.g. an error page served with status 200
    with pytest.raises(
        DownloadError, match="not a readable tar archive.*deleted with its self-recorded checksum"
    ):
        fetch(tmp_path, [listops_part()], options(url))
    manifest = json.loads((tmp_path / "downloads" / "manifest.json").read_text())
    assert (
        "lra_release.gz" not in manifest["archives"]
        and not (tmp_path / "downloads" / "lra_release.gz").exists()
    )
    state.files["lra_release.gz"] = tiny_registry.files["aclImdb_v1.tar.gz"]  # a tar without the folder
    with pytest.raises(DownloadError, match=r"has no folder 'listops-1000' \(for listops\)"):
        fetch(tmp_path, [listops_part()], options(url))
    assert not list((tmp_path / "lra_release").glob(".listops-1000.unpack-*"))
