"""`python -m experiments.gpu_check --device cpu`: every section at reduced sizes, and the 200-step bf16/fp32 demo."""

from __future__ import annotations

import json
import math

import pytest

from experiments import gpu_check


def test_gpu_check_runs_on_cpu_at_reduced_sizes(tmp_path):
    """Every section (one recipe, one efficiency model: the others have their own tests) in one command."""
    markdown, raw = tmp_path / "BENCHMARKS.md", tmp_path / "gpu_check.json"
    argv = [
        "--device",
        "cpu",
        "--recipes",
        "lra_listops_chunk",
        "--efficiency-models",
        "MEGA",
        "--repeats",
        "1",
    ]
    results = gpu_check.main([*argv, "--markdown", str(markdown), "--json", str(raw)])

    assert gpu_check.failures(results) == []
    assert len(results["parity"]) == 10 and all(row["ok"] for row in results["parity"])
    assert [row["precision"] for row in results["training"]] == ["bf16-mixed", "32-true"]
    assert all(row["steps"] == 4 and math.isfinite(row["test/loss"]) for row in results["training"])
    (recipe,) = results["recipes"]
    assert recipe["length"] == 128 and recipe["batch_size"] == 1 and recipe["projected_hours"] > 0
    text = markdown.read_text()
    assert (
        "<!-- gpu_check_cpu:start -->" in text
        and "**Parity**" in text
        and "| lra_listops_chunk | 1 | 128 |" in text
    )
    assert "| MEGA | " in text and "2.9×" in text  # the efficiency table with the paper's ratio
    assert set(json.loads(raw.read_text())) >= {"machine", "parity", "training", "efficiency", "recipes"}


def test_parity_check_fails_when_the_device_computes_something_else(monkeypatch):
    """The bounds can fail: a device whose encoder gradients are off by 1 % is reported."""
    original, calls = gpu_check.encoder_step, []

    def skewed(options, device, dtype, ids):
        calls.append(dtype)
        hidden, grads = original(options, device, dtype, ids)
        on_device = len(calls) % 6 == 2  # per attention kind: CPU fp32, device fp32, then the half precisions
        return (hidden, grads * 1.01) if on_device else (hidden, grads)

    monkeypatch.setattr(gpu_check, "encoder_step", skewed)
    rows = gpu_check.parity(gpu_check.torch.device("cpu"), full=False)
    assert [row["check"] for row in rows if not row["ok"]] == [
        "encoder gradients, full attention, fp32",
        "encoder gradients, chunk, fp32",
    ]


@pytest.mark.slow
def test_listops_demo_200_steps_in_bf16_and_fp32(tmp_path):
    """The demo's first 200 updates from seed 1 in both precisions (figures in README and BENCHMARKS.md)."""
    argv = ["--device", "cpu", "--scale", "full", "--sections", "training", "--no-markdown"]
    results = gpu_check.main(argv)
    rows = {row["precision"]: row for row in results["training"]}
    print({p: (row["test/acc"], row["test/loss"]) for p, row in rows.items()})
    assert all("error" not in row and row["steps"] == 200 for row in rows.values())
    # the demo's majority class is 12 % of the test set: both must have learnt something
    assert rows["bf16-mixed"]["test/acc"] > 0.2 and rows["32-true"]["test/acc"] > 0.2
