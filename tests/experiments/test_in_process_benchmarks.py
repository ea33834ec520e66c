"""The benchmarks that time in one process: mega_cputime, lm_decode and loader_throughput, at tiny sizes."""

import json

from experiments import lm_decode, loader_throughput, mega_cputime
from experiments.publish import write_section
from tests.conftest import TINY_MODEL


def test_mega_cputime_alternates_both_implementations_and_publishes(tmp_path, capsys):
    markdown, raw = tmp_path / "B.md", tmp_path / "cpu.json"
    write_section(markdown, "other", "kept")
    argv = ["--length", "64", "--chunk", "32", "--batch-size", "1", "--repeats", "2"]
    results = mega_cputime.main([*argv, "--markdown", str(markdown), "--json", str(raw)])
    assert {name: len(r["cpu_times_s"]) for name, r in results.items()} == {"hf": 2, "ours": 2}
    assert results["ours"]["params"] - results["hf"]["params"] in (0, 1)  # ours adds the final norm's gain
    text = markdown.read_text()
    assert (
        "kept" in text
        and "| 64 | chunk 32 |" in text
        and "python -m experiments.mega_cputime --length 64" in text
    )
    assert json.loads(raw.read_text())["hf"]["median_cpu_s"] > 0
    # without --markdown it only prints
    mega_cputime.main([*argv, "--chunk", "-1"])
    assert "| 64 | full |" in capsys.readouterr().out and "full" not in markdown.read_text()


def test_lm_decode_times_cached_steps_and_full_passes(capsys):
    rows = lm_decode.main(["--prefixes", "8", "16", "--chunk", "8", "--steps", "3", "--repeats", "2"])
    assert [row["prefix"] for row in rows] == [8, 16]
    assert all(len(row["cached"]["times_s"]) == 3 and len(row["full"]["times_s"]) == 2 for row in rows)
    assert "| 16 | " in capsys.readouterr().out


def test_loader_throughput_times_the_loader_and_the_model(data_dir, capsys):
    overrides = [
        "debug=smoke",
        f"paths.data_dir={data_dir}",
        *[f"model.{k}={v}" for k, v in TINY_MODEL.items()],
    ]
    result = loader_throughput.main(["lra_listops", *overrides, "--batches", "3", "--steps", "1"])
    assert result["experiment"] == "lra_listops" and result["num_workers"] == 0
    assert result["loader_samples_per_s"] > 0 and result["train_samples_per_s"] > 0 and result["ratio"] > 0
    out = capsys.readouterr().out
    assert json.loads(out.strip().splitlines()[-1]) == result
    assert "| `lra_listops debug=smoke" in out
    only_loader = loader_throughput.main(["lra_listops", "--steps", "0", *overrides, "--batches", "2"])
    assert "train_samples_per_s" not in only_loader
