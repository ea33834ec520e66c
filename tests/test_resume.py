"""Resume as a user does it: after a kill, a `trainer.max_time` stop or a finished run extended with more steps,
`ckpt_path=<run dir>` ends with the weights and `val/acc_best` of an uninterrupted run."""

from __future__ import annotations

import csv
import time
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from tasks.training.classifier import ClassificationModule
from tasks.training.resume import reopen_stopped_epoch
from tests.conftest import compose_config
from tests.test_train import run, weights

# 4 batches per epoch of the 256 stand-in examples: the stop (update 5) is mid-epoch and the resumed run crosses
# into the next epoch. The warm-up outlasts the run, so the lr of each update does not depend on max_steps (an
# extended run has the same schedule). Validation after every update; lr 0.3 so that accuracy moves: the best
# comes before the stop, so a resumed run that forgot it would report another value.
COMMON = [
    "seed=2",
    "trainer.limit_train_batches=null",
    "data.batch_size=64",
    "trainer.val_check_interval=1",
    "trainer.check_val_every_n_epoch=null",
    "trainer.limit_val_batches=2",
    "optimizer.lr=0.3",
    "scheduler.warmup_steps=12",
    "callbacks.periodic_checkpoint.every_n_train_steps=3",
]
STEPS, STOP = 10, 5


class SlowStep(L.Callback):
    """Makes update `step` last `seconds`, so that a `trainer.max_time` shorter than that stops the run there at
    the latest (earlier on a slow machine: any stop before the end tests the same)."""

    def __init__(self, step: int, seconds: float) -> None:
        self.step, self.seconds = step, seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            time.sleep(self.seconds)


def val_accuracies(run_dir: Path) -> list[float]:
    rows = csv.DictReader((run_dir / "csv" / "version_0" / "metrics.csv").open())
    return [float(row["val/acc"]) for row in rows if row.get("val/acc")]


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[dict, dict, list[float]]:
    """The uninterrupted run (shared by the tests): last weights, results.json, validation accuracy per update."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    cfg = compose_config(["debug=smoke", *COMMON, f"trainer.max_steps={STEPS}"], run_dir, data_dir)
    results = run(cfg)
    return weights(run_dir / "checkpoints" / "last.ckpt"), results, val_accuracies(run_dir)


FIRST_PARTS = {
    "kill": [
        f"trainer.max_steps={STEPS}",
        "+callbacks.crash._target_=tests.test_train.CrashAtStep",
        f"+callbacks.crash.step={STOP}",
    ],
    "max_time": [
        f"trainer.max_steps={STEPS}",
        "+trainer.max_time=00:00:00:01",
        "+callbacks.slow._target_=tests.test_resume.SlowStep",
        f"+callbacks.slow.step={STOP}",
        "+callbacks.slow.seconds=1.5",
    ],
    "extended": [f"trainer.max_steps={STOP}"],  # a finished run, extended below to more steps
    "extended_at_epoch_end": ["trainer.max_steps=4"],  # the epoch ran to its end: the next one starts
}


@pytest.mark.parametrize("how", sorted(FIRST_PARTS))
def test_resumed_run_equals_the_uninterrupted_run(make_cfg, straight, how: str) -> None:
    expected, expected_results, accuracies = straight
    assert max(accuracies[:STOP]) > max(accuracies[STOP:]), "the best must come before the stop to be tested"
    first = make_cfg(*COMMON, *FIRST_PARTS[how], run="resumed")
    run_dir = Path(first.paths.output_dir)
    stopped_at = None
    if how == "kill":
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(first)
    else:
        stopped_at = run(first)["steps"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert 1 <= last["global_step"] <= STOP and "val_acc_best.max_value" in last["state_dict"]
    if stopped_at is not None:  # a graceful stop writes last.ckpt where it stopped
        assert last["global_step"] == stopped_at

    results = run(make_cfg(*COMMON, f"trainer.max_steps={STEPS}", f"ckpt_path={run_dir}", run="resumed"))
    assert results["steps"] == STEPS
    actual = weights(run_dir / "checkpoints" / "last.ckpt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert results["val/acc_best"] == expected_results["val/acc_best"] == max(accuracies)


@pytest.mark.parametrize("is_last_batch", [False, True])
def test_a_processed_epoch_is_reopened_once(is_last_batch: bool) -> None:
    def checkpoint(processed: int) -> dict:
        counts = {"ready": 2, "started": 2, "processed": processed, "completed": processed}
        batches = {"current": {"completed": 3}, "is_last_batch": is_last_batch}
        progress = {"total": dict(counts), "current": dict(counts)}
        return {
            "epoch": processed,
            "loops": {"fit_loop": {"epoch_progress": progress, "epoch_loop.batch_progress": batches}},
        }

    stopped = checkpoint(processed=2)
    reopen_stopped_epoch(stopped)
    assert stopped == checkpoint(processed=1)
    reopen_stopped_epoch(stopped)  # a running epoch stays as it is
    assert stopped == checkpoint(processed=1)
    weights_only = {"state_dict": {}}
    reopen_stopped_epoch(weights_only)
    assert weights_only == {"state_dict": {}}


def test_best_so_far_is_in_the_checkpoint_and_older_checkpoints_still_load(caplog) -> None:
    def module() -> ClassificationModule:
        return ClassificationModule(torch.nn.Linear(2, 2), partial(torch.optim.AdamW, lr=1e-3))

    trained = module()
    trained.val_acc_best(torch.tensor(0.75))
    state = trained.state_dict()
    resumed = module()
    resumed.on_load_checkpoint({"state_dict": state})
    resumed.load_state_dict(state)
    assert resumed.val_acc_best.compute() == 0.75

    older = {k: v for k, v in state.items() if not k.startswith("val_acc_best.")}
    checkpoint = {"state_dict": older}
    fresh = module()
    fresh.on_load_checkpoint(checkpoint)  # fills the missing state, says so
    fresh.load_state_dict(checkpoint["state_dict"])  # strict, as Lightning loads
    assert "val_acc_best.max_value" in caplog.text and fresh.val_acc_best.max_value == -float("inf")
