"""`make bench` end to end at a tiny size: both implementations measured in their own processes, table written."""

import json

import pytest

from experiments import bench_mega
from experiments.harness import Job, measure
from experiments.publish import machine_info, write_section

TINY = [
    "--lengths",
    "64",
    "--attention",
    "chunk",
    "--chunk-size",
    "32",
    "--batch-size",
    "1",
    "--repeats",
    "1",
]


def test_one_configuration_is_measured_and_reported():
    """In this process (fast): both builders, the timing and memory probe, the ratio table."""
    args = bench_mega.parse_args(TINY)
    options = {
        "model": bench_mega.model_options(64, "chunk", 32, 64),
        "batch_size": 1,
        "length": 64,
        "seed": 0,
    }
    row = {"length": 64, "attention": "chunk"}
    for role, name in (("candidate", "ours"), ("hf", "hf")):
        row[role] = measure(Job(bench_mega.IMPLEMENTATIONS[name], options, repeats=1))
        assert len(row[role]["times_s"]) == 1 and row[role]["median_s"] > 0 and row[role]["peak_mib"] >= 0
    # same architecture: ours adds only the final ScaleNorm's scalar gain that the HF port lacks
    assert row["candidate"]["params"] - row["hf"]["params"] in (0, 1)
    text = bench_mega.report([row], args, machine_info("cpu"), "python -m experiments.bench_mega")
    assert "| 64 | chunk 32 |" in text and "speed-up (HF/ours)" in text


@pytest.mark.slow
def test_bench_mega_runs_end_to_end_and_writes_its_table(tmp_path):
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\nProse the script must keep.\n")
    raw = tmp_path / "bench.json"
    argv = [*TINY, "--markdown", str(markdown), "--json", str(raw)]
    rows = bench_mega.main(argv)

    assert [(row["length"], row["attention"]) for row in rows] == [(64, "chunk")]
    for role in ("candidate", "hf"):
        result = rows[0][role]
        assert len(result["times_s"]) == 1 and result["times_s"][0] > 0
        assert result["peak_mib"] >= 0 and result["threads"] == 2
    text = markdown.read_text()
    assert "Prose the script must keep." in text
    assert "| 64 | chunk 32 |" in text and "python -m experiments.bench_mega --lengths 64" in text
    assert json.loads(raw.read_text())["rows"][0]["length"] == 64


def test_write_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "B.md"
    write_section(path, "one", "first")
    write_section(path, "two", "second")
    write_section(path, "one", "first again")
    text = path.read_text()
    assert "first again" in text and "second" in text and "first\n" not in text


def test_chunked_lengths_must_be_multiples_of_the_chunk():
    with pytest.raises(SystemExit):
        bench_mega.parse_args(["--lengths", "100", "--chunk-size", "64"])
