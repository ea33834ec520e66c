"""Sweeps and DDP for real, through `python train.py` (slow: each starts Python, Lightning and several processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
TINY = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]


def train(tmp_path: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "train.py",
        *(["-m"] if multirun else []),
        "experiment=lra_listops_demo",
        "debug=smoke",
        "trainer.max_steps=3",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        *TINY,
        *overrides,
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ddp_multirun_with_a_failing_job(tmp_path):
    """Job 0 fails (bad option): reported, exit status 1; job 1 trains with DDP on 2 CPU processes (gloo) and keeps
    its results.json and W&B run; the DDP ranks of a multirun job run that job only, in its folder."""
    done = train(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",  # torch's SyncBatchNorm needs GPUs
        "logger=wandb",
        "model.normalization_type=bogus,batchnorm",
        multirun=True,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 1
    assert "Error executing job with overrides" in log and "normalization_type=bogus" in log
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    (results_file,) = tmp_path.glob("outputs/debug/lra_listops_demo/multiruns/*/*/results.json")
    assert results_file.parent.name == "1"
    results = json.loads(results_file.read_text())
    assert results["steps"] == 3 and "model.normalization_type=batchnorm" in results["overrides"]
    assert len(list((results_file.parent / "wandb").glob("offline-run-*"))) == 1
    sweeps = list(tmp_path.glob("outputs/debug/lra_listops_demo/multiruns/*"))
    assert len(sweeps) == 1  # no sweep started by a rank


@pytest.mark.slow
def test_optuna_search_goes_on_after_failed_trials(tmp_path):
    """A search in which lr = -1 trials fail: they score failed_trial_value, the others finish, a best is found."""
    done = train(
        tmp_path,
        "hparams_search=failing_optuna",
        "logger=csv",
        f"hydra.searchpath=[file://{ROOT / 'tests' / 'fixtures' / 'conf'}]",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "This trial failed; it scores failed_trial_value=0.0" in log
    (study,) = tmp_path.glob("outputs/debug/lra_listops_demo/multiruns/*/optimization_results.yaml")
    assert "optimizer.lr: 0.004" in study.read_text()
    finished = list(tmp_path.glob("outputs/debug/lra_listops_demo/multiruns/*/*/results.json"))
    assert 1 <= len(finished) < 4  # the failed trials wrote no results
