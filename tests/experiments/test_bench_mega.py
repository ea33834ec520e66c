"""`make bench` end to end at a tiny size: both implementations measured in their own processes, table written."""

import json
from collections import Counter

import pytest
import torch

from experiments import bench_mega, matmul_floor
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
        job_options = {**options, "floor_repeats": 1} if role == "candidate" else options
        row[role] = measure(Job(bench_mega.IMPLEMENTATIONS[name], job_options, repeats=1))
        assert len(row[role]["times_s"]) == 1 and row[role]["median_s"] > 0 and row[role]["peak_mib"] >= 0
    assert 0 < row["candidate"]["matmul_floor_s"] and "matmul_floor_s" not in row["hf"]
    # same architecture: ours adds only the final ScaleNorm's scalar gain that the HF port lacks
    assert row["candidate"]["params"] - row["hf"]["params"] in (0, 1)
    text = bench_mega.report([row], args, machine_info("cpu"), "python -m experiments.bench_mega")
    assert "| 64 | chunk 32 |" in text and "speed-up (HF/ours)" in text and "ours / floor" in text


def test_matmul_floor_records_forward_and_backward_products():
    weight = torch.randn(5, 3, requires_grad=True)
    x = torch.randn(4, 3, requires_grad=True)
    scores = torch.randn(2, 4, 6, requires_grad=True)

    def step() -> None:
        (
            torch.nn.functional.linear(x, weight).sum() + torch.bmm(scores, scores.transpose(1, 2)).sum()
        ).backward()

    calls = matmul_floor.record_matmuls(step)
    ops = Counter()
    for (func, _, _), count in calls.items():
        ops[func.overloadpacket] += count
    # forward: one mm (linear without bias) and one bmm; backward: two mm (x, W) and two bmm (both operands)
    assert ops == {torch.ops.aten.mm: 3, torch.ops.aten.bmm: 3}
    assert matmul_floor.replay_seconds(calls, repeats=2) > 0
    assert matmul_floor.replay_seconds(Counter(), repeats=1) == 0


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
