"""What a run reports: a validation line per validation in its log, the offline W&B run's config and summary as
files, a progress bar without "Epoch 5/-2", and a console without duplicated lines or notices for other authors."""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import yaml

from tasks.training import console
from tasks.training.reporting import ProgressBar
from tests.test_train import run


def test_validation_lines_and_offline_wandb_files(make_cfg, caplog) -> None:
    cfg = make_cfg("logger=wandb")
    with caplog.at_level(logging.INFO, logger="tasks.training.reporting"):
        results = run(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Validation at step")]
    assert len(lines) == 2 and lines[0].startswith("Validation at step 2 (epoch 0): val/acc ")
    assert "val/acc_best" in lines[-1] and "val/loss" in lines[-1]
    (files,) = (Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*/files")
    config = yaml.safe_load((files / "config.yaml").read_text())
    assert config["seed"]["value"] == 1 and config["model"]["value"]["_target_"].startswith("mega.")
    summary = json.loads((files / "wandb-summary.json").read_text())
    assert summary["test/acc"] == results["test/acc"] and summary["val/acc_best"] == results["val/acc_best"]


def test_the_progress_bar_shows_no_negative_epoch_count() -> None:
    bar = ProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(5).strip() == "Epoch 5"
    bar._trainer = SimpleNamespace(max_epochs=10)
    assert bar._get_train_description(5).strip() == "Epoch 5/9"


def test_the_console_keeps_notices_for_other_authors_in_the_log_file(tmp_path: Path, monkeypatch) -> None:
    root = logging.getLogger()
    screen, file = logging.StreamHandler(io.StringIO()), logging.FileHandler(tmp_path / "train.log")
    lightning = logging.getLogger("lightning")
    own = logging.StreamHandler(io.StringIO())
    monkeypatch.setattr(root, "handlers", [screen, file])
    monkeypatch.setattr(lightning, "handlers", [own])
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    console.tidy_console()
    assert lightning.handlers == [] and screen.filters and not file.filters
    installed = f"{console.INSTALLED[0]}/somepackage/module.py"
    warnings.showwarning("old API", FutureWarning, installed, 3)
    warnings.showwarning("num_workers is low", UserWarning, installed, 4)
    warnings.showwarning("our own deprecation", DeprecationWarning, __file__, 5)
    logging.getLogger("lightning.pytorch").info("💡 Tip: try our cloud")
    file.flush()
    shown, logged = screen.stream.getvalue(), (tmp_path / "train.log").read_text()
    assert "old API" not in shown and "Tip" not in shown
    assert "num_workers is low" in shown and "our own deprecation" in shown
    assert all(m in logged for m in ("old API", "Tip", "num_workers is low", "our own deprecation"))
