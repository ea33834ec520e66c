"""`python -m experiments.efficiency`: Transformer, MEGA(-chunk) and Megalodon(-chunk) Text classifiers timed and reported."""

import json

import pytest

from experiments import efficiency, paper
from experiments.harness import Job, measure
from experiments.publish import machine_info


def test_each_text_model_trains_one_step_and_the_report_and_plot_are_written(tmp_path, monkeypatch):
    """In this process (fast): recipes composed from conf/arch, one AdamW step each, tables, PNG."""
    args = efficiency.parse_args(["--lengths", "64", "--batch-size", "1", "--device", "cpu"])
    args.plot, args.markdown = tmp_path / "efficiency.png", tmp_path / "BENCHMARKS.md"
    rows = []
    for model in efficiency.MODELS:
        options = {
            "model": model,
            "net": efficiency.net_options(model, 64),
            "batch_size": 1,
            "length": 64,
            "seed": 0,
        }
        result = measure(Job("experiments.efficiency:build_classifier", options, repeats=1))
        assert result["median_s"] > 0 and result["peak_mib"] >= 0 and result["params"] > 0
        rows.append({"model": model, "length": 64, **result})
    assert efficiency.net_options("Mega-chunk", 64)["chunk_size"] == 128  # the paper's Mega-chunk
    assert efficiency.net_options("MEGA", 8192)["max_positions"] == 8192
    efficiency.plot(rows, args, "test")
    assert args.plot.stat().st_size > 0
    text = efficiency.report(rows, args, machine_info("cpu"), "python -m experiments.efficiency")
    assert "| Transformer | " in text and "| 1× | 1× |" in text  # measured and paper speed of the baseline
    assert "| Mega-chunk | " in text and "5.5×" in text and "0.13×" in text
    assert "| Megalodon-chunk | " in text  # measured; the Megalodon paper gives no speed or memory figures
    assert efficiency.net_options("Megalodon-chunk", 64)["chunk_size"] == 128
    assert {row["model"]: row["params"] for row in rows}["Megalodon"] == 910_720  # the lra_text recipe
    assert "(efficiency.png)" in text
    # the paper's figures come from experiments/paper.py alone
    monkeypatch.setitem(paper.TEXT_4K_EFFICIENCY, "MEGA-chunk", (7.7, 0.77))
    text = efficiency.report(rows, args, machine_info("cpu"), "python -m experiments.efficiency")
    assert "7.7×" in text and "0.77×" in text and "5.5×" not in text


@pytest.mark.slow
def test_efficiency_runs_end_to_end(tmp_path):
    markdown, raw, png = tmp_path / "BENCHMARKS.md", tmp_path / "eff.json", tmp_path / "eff.png"
    argv = ["--lengths", "64", "128", "--batch-size", "1", "--repeats", "1", "--device", "cpu"]
    argv += ["--markdown", str(markdown), "--json", str(raw), "--plot", str(png)]
    rows = efficiency.main(argv)

    assert sorted((row["model"], row["length"]) for row in rows) == sorted(
        (model, length) for model in efficiency.MODELS for length in (64, 128)
    )
    assert all("error" not in row and len(row["times_s"]) == 1 for row in rows)
    assert "Text at length 128, relative to the Transformer" in markdown.read_text()
    assert png.stat().st_size > 0 and len(json.loads(raw.read_text())["rows"]) == 2 * len(efficiency.MODELS)
