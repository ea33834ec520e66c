"""What a run does with bad input and faults: one-line errors with the traceback in train.log, damaged
checkpoints named (never the advice to unpickle them), refused resumes that leave the run dir alone, and resumes
into another folder that continue exactly."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import open_dict

from tasks.training.checkpoint_io import relocate
from tasks.training.state import CHECKSUMS, DamagedCheckpoint, load_net, read_checkpoint, with_checksums
from tests.test_train import CrashAtStep, run, weights

ROOT = Path(__file__).resolve().parents[1]
assert CrashAtStep  # the crash callback is addressed by its import path in the configs below


def command_line(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "train.py", f"paths.data_dir={tmp_path / 'data'}", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_bad_model_option_fails_in_one_line_before_any_heavy_import(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = command_line(tmp_path, "model.chunk_size=abc", f"hydra.run.dir={run_dir}")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    message = "model.chunk_size='abc' has type str; expected int"
    assert output.count(message) == 1 and "Traceback" not in output, output
    assert (
        result.stderr.splitlines()[-1]
        == f"Error: TypeError: {message} (traceback in {run_dir / 'train.log'})"
    )
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and message in log
    assert not (run_dir / ".hydra").exists()  # nothing of a run that never started
    for heavy in ("lightning", "datasets"):
        assert f"import {heavy}" not in (ROOT / "train.py").read_text().split("def ", 1)[0]


def test_hydra_does_not_write_the_run_config_itself(make_cfg) -> None:
    assert make_cfg().hydra.output_subdir is None  # train.py writes .hydra/ once the checks passed


# ---- damaged checkpoints ------------------------------------------------------------------------------------------


EXP = torch.rand(64, 64)  # a stand-in for an optimizer's second moments
RANDOM = "not a PyTorch checkpoint|torch cannot read it"  # random bytes fail the unpickler in several ways


def a_checkpoint(path: Path) -> Path:
    state = {"state_dict": {"net.w": torch.randn(64, 64)}, "optimizer_states": [{"exp_avg_sq": EXP}]}
    torch.save(with_checksums(state), path)
    return path


def flip_bytes_of(path: Path, tensor: torch.Tensor, count: int = 64) -> None:
    """Flip `count` bytes inside the stored data of `tensor` (found by its bytes), as a disk error would."""
    data = bytearray(path.read_bytes())
    start = data.find(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    assert start > 0
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda path: path.write_bytes(b""), "the file is empty"),
        *[
            (lambda path, seed=seed: path.write_bytes(random.Random(seed).randbytes(4096)), RANDOM)
            for seed in range(8)
        ],
        (lambda path: os.truncate(path, path.stat().st_size // 2), "torch cannot read it"),
        (lambda path: flip_bytes_of(path, EXP), "optimizer_states differ from what was written"),
    ],
    ids=["empty", *(f"random-bytes-{seed}" for seed in range(8)), "truncated", "flipped-bytes"],
)
def test_a_damaged_checkpoint_is_named_without_unsafe_advice(tmp_path: Path, damage, reason: str) -> None:
    path = a_checkpoint(tmp_path / "last.ckpt")
    damage(path)
    with pytest.raises(
        DamagedCheckpoint, match=f"checkpoint {path} is damaged or not a checkpoint \\(.*({reason})"
    ) as error:
        read_checkpoint(path)
    assert "weights_only=False" not in str(error.value) and error.value.__cause__ is None


def test_a_checkpoint_holding_python_objects_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {}, "callbacks": {"x": Path("somewhere")}}, tmp_path / "odd.ckpt")
    with pytest.raises(DamagedCheckpoint, match="holds Python objects other than tensors") as error:
        read_checkpoint(tmp_path / "odd.ckpt")
    assert "weights_only=False" not in str(error.value)


def test_a_checkpoint_without_checksums_loads_unverified(tmp_path: Path, caplog) -> None:
    torch.save({"state_dict": {}}, tmp_path / "old.ckpt")
    with caplog.at_level("INFO"):
        assert read_checkpoint(tmp_path / "old.ckpt") == {"state_dict": {}}
    assert "has no checksums" in caplog.text


def test_flipped_bytes_in_the_optimizer_state_stop_the_resume(make_cfg) -> None:
    first = make_cfg("trainer.max_steps=2", "trainer.limit_train_batches=1", run="first")
    run(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert set(state[CHECKSUMS]["sha256"]) == set(state) - {CHECKSUMS}
    exp_avg_sq = next(
        s["exp_avg_sq"]
        for s in state["optimizer_states"][0]["state"].values()
        if s["exp_avg_sq"].numel() >= 16
    )
    flip_bytes_of(last, exp_avg_sq)
    with pytest.raises(DamagedCheckpoint, match=f"checkpoint {last} is damaged .*optimizer_states differ"):
        run(make_cfg("trainer.max_steps=4", f"ckpt_path={first.paths.output_dir}", run="first"))
    with pytest.raises(DamagedCheckpoint, match="optimizer_states differ"):
        load_net(last)


# ---- resume: refused before the run dir is touched, and into another folder -------------------------------------


def test_a_refused_resume_leaves_the_original_run_alone(make_cfg) -> None:
    first = make_cfg("trainer.max_steps=2", "trainer.limit_train_batches=1", "logger=wandb", run="first")
    run(first)
    run_dir = Path(first.paths.output_dir)
    before = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and "wandb" not in p.parts}
    wandb_files = sorted(p for p in (run_dir / "wandb").rglob("*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    other = make_cfg("trainer.max_steps=4", f"ckpt_path={run_dir}", "logger=wandb", run="first")
    with open_dict(other):
        other.model.attention_activation = "laplace"
    with pytest.raises(
        ValueError, match="model.attention_activation: checkpoint 'softmax' vs config 'laplace'"
    ):
        run(other)
    after = {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file() and "wandb" not in p.parts}
    assert after == before  # the same config, overrides, CSV versions, checkpoints
    assert sorted(p for p in (run_dir / "wandb").rglob("*")) == wandb_files


def test_resuming_in_another_folder_continues_exactly(make_cfg, tmp_path: Path) -> None:
    common = [  # validations at steps 2, 4, 6; the crash after step 3, whose checkpoint records best-step2
        "trainer.max_steps=6",
        "trainer.limit_train_batches=null",
        "trainer.val_check_interval=2",
        "trainer.check_val_every_n_epoch=null",
        "data.batch_size=64",
        "callbacks.periodic_checkpoint.every_n_train_steps=3",
    ]
    straight = run(make_cfg(*common, run="straight"))
    crashed = make_cfg(
        *common, "+callbacks.crash._target_=tests.test_train.CrashAtStep", "+callbacks.crash.step=3", run="a"
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed)
    original = Path(crashed.paths.output_dir)
    shutil.copytree(original, tmp_path / "copy")
    kept = {p.name: p.read_bytes() for p in (original / "checkpoints").iterdir()}

    moved = run(make_cfg(*common, f"ckpt_path={original}", run="b"))  # hydra.run.dir=<b>
    copied = run(make_cfg(*common, f"ckpt_path={tmp_path / 'copy'}", run="copy"))  # the run dir was copied
    expected = weights(Path(straight["run_dir"]) / "checkpoints" / "last.ckpt")
    for results in (moved, copied):
        run_dir = Path(results["run_dir"])
        assert results["steps"] == 6 and Path(results["best_checkpoint"]).parent == run_dir / "checkpoints"
        assert Path(results["best_checkpoint"]).name == Path(straight["best_checkpoint"]).name
        assert results["test/acc"] == straight["test/acc"]
        actual = weights(run_dir / "checkpoints" / "last.ckpt")
        assert all(torch.equal(expected[k], actual[k]) for k in expected)
        assert best_record(run_dir) == best_record(Path(straight["run_dir"]))
    assert {
        p.name: p.read_bytes() for p in (original / "checkpoints").iterdir()
    } == kept  # the original is kept
    config = yaml.safe_load((Path(moved["run_dir"]) / ".hydra" / "config.yaml").read_text())
    assert config["ckpt_path"] == str(original) and json.loads(
        (Path(moved["run_dir"]) / "results.json").read_text()
    )["best_checkpoint"].startswith(moved["run_dir"])


def best_record(run_dir: Path) -> tuple:
    """What the best-checkpoint callback of a run's last.ckpt recorded: (score, file names of its best k)."""
    states = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (state,) = [v for k, v in states.items() if k.startswith("ModelCheckpoint") and v["monitor"]]
    return float(state["best_model_score"]), sorted(Path(p).name for p in state["best_k_models"])


def test_relocated_records_copy_what_is_missing_and_forget_what_is_gone(tmp_path: Path, caplog) -> None:
    source, target = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    source.mkdir(parents=True)
    (source / "best-step2.ckpt").write_bytes(b"best")
    state = {
        "dirpath": str(source),
        "best_model_path": str(source / "best-step2.ckpt"),
        "best_model_score": torch.tensor(0.5),
        "best_k_models": {str(source / "best-step2.ckpt"): torch.tensor(0.5)},
        "kth_best_model_path": str(source / "best-step2.ckpt"),
        "last_model_path": str(source / "last.ckpt"),
    }
    relocate(state, source, target)
    assert (target / "best-step2.ckpt").read_bytes() == b"best" and state["dirpath"] == str(target)
    assert state["best_model_path"] == state["kth_best_model_path"] == str(target / "best-step2.ckpt")
    assert list(state["best_k_models"]) == [str(target / "best-step2.ckpt")]
    assert state["last_model_path"] == str(target / "last.ckpt")

    gone = {**state, "dirpath": str(source), "best_model_path": str(source / "best-step9.ckpt")}
    gone["best_k_models"] = {str(source / "best-step9.ckpt"): torch.tensor(0.9)}
    with caplog.at_level("WARNING"):
        relocate(gone, source, tmp_path / "c")
    assert gone["best_model_path"] == "" and gone["best_k_models"] == {} and gone["best_model_score"] is None
    assert "is gone from there" in caplog.text
