"""`python -m experiments.checkpointing`: the Path-X step with checkpointing off/on, and the one-GPU estimate."""

from __future__ import annotations

import pytest

from experiments import checkpointing
from experiments.harness import Job, measure
from experiments.publish import machine_info


def test_the_recipe_is_path_x() -> None:
    base = checkpointing.recipe()
    assert base["batch_size"] == 16 and base["accumulate"] == 8  # conf/experiment/lra_pathx.yaml
    assert base["net"]["normalization_type"] == "batchnorm" and base["net"]["max_positions"] == 16384
    assert base["net"]["input_kind"] == "real" and base["net"]["num_labels"] == 2


@pytest.mark.parametrize("precision", checkpointing.PRECISIONS)
def test_one_step_of_each_precision_is_measured(precision: str) -> None:
    net = dict(checkpointing.recipe()["net"], chunk_size=16, activation_checkpointing=True)
    options = {"net": net, "batch_size": 2, "length": 64, "precision": precision, "seed": 0}
    result = measure(Job("experiments.checkpointing:build_step", options, repeats=1))
    assert result["median_s"] > 0 and result["peak_mib"] >= 0 and result["params"] > 0


def fake_rows(args) -> list[dict]:
    """Peaks of a + b·B MiB (a = 8, b = L/64, halved by checkpointing); a full attention adds L²/2^14 per sample."""
    rows = []
    for row in checkpointing.configurations(args):
        per_sample = row["length"] / 64 / (2 if row["checkpointing"] else 1)
        if row["chunk"] < 0:
            per_sample += row["length"] ** 2 / 2**14
        rows.append(dict(row, median_s=1.0, peak_mib=8 + per_sample * row["batch"], params=0))
    return rows


def test_the_estimate_is_linear_in_the_batch_and_scales_the_attention() -> None:
    args = checkpointing.parse_args(
        ["--lengths", "256", "1024", "--chunk-sizes", "128", "-1", "--no-markdown"]
    )
    configurations = checkpointing.configurations(args)
    # chunk 128 at both lengths and batches, full attention at the first length and batch; × precisions × off/on
    assert len(configurations) == (2 * 2 + 1) * 2 * 2
    rows = fake_rows(args)
    for on in (False, True):
        keys = dict(precision="fp32", checkpointing=on)
        expected = 8 + 16 * 1024 / 64 / (2 if on else 1)
        assert checkpointing.estimate_mib(rows, args, 16, chunk=128, **keys) == pytest.approx(expected)
        # the full attention's extra L² per sample, read at L₀ = 256 and grown × (1024/256)²
        full = checkpointing.estimate_mib(rows, args, 16, chunk=-1, **keys)
        assert full == pytest.approx(expected + 16 * 1024**2 / 2**14)
    text = checkpointing.report(
        rows,
        args,
        machine_info("cpu"),
        "python -m experiments.checkpointing",
        {"batch_size": 16, "accumulate": 8},
    )
    assert "| 1024 | fp32 | off | 1.67× | 16 | 8 |" in text  # peaks 24 and 40 MiB: b = 16, a = 8
    assert "| full | fp32 | off | 1.3 | yes | yes |" in text
