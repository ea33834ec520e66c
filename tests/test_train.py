"""The training app end to end on tiny generated data: every experiment, results.json, resume, W&B, bad checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
import wandb
from omegaconf import DictConfig, open_dict

import mega
import train
from tasks.resolvers import resume_dir, stable_id
from tasks.training.optim import cosine, linear_decay, parameter_groups
from tasks.training.state import checkpoint_file, load_net, run_dir_of
from tests.conftest import CONF_DIR, EXPERIMENTS, TINY_MODEL


class CrashAtStep(L.Callback):
    """Simulates a killed job: fails as the batch after `step` starts (its checkpoint is already written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash after step {self.step}")


def shrink(cfg: DictConfig) -> DictConfig:
    """Apply the TINY_MODEL sizes that this experiment's model has (other model families may lack some)."""
    with open_dict(cfg):
        for key, value in TINY_MODEL.items():
            if key in cfg.model:
                cfg.model[key] = value
    return cfg


def run(cfg: DictConfig) -> dict:
    train.main(shrink(cfg))
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


# The paper recipes (conf/experiment/{lra,sc}_*, not the demos) take 10-90 s each here even on small batches of
# stand-in data: they run in `make test-full`; `make test` composes and builds them (test_configs, test_recipes).
PAPER_SCALE = [e for e in EXPERIMENTS if not e.endswith("_demo") and not e.startswith("lra_listops")]
# Path-X on CPU: average-pool the 128×128 stand-in to 16×16 (full attention over 16384 positions needs GBs)
SMOKE_OVERRIDES = {
    e: ["data.pool=8", "data.max_length=256"] for e in EXPERIMENTS if e.startswith("lra_pathx")
}


@pytest.mark.parametrize(
    "experiment", [pytest.param(e, marks=pytest.mark.slow) if e in PAPER_SCALE else e for e in EXPERIMENTS]
)
def test_every_experiment_runs_a_few_steps(make_cfg, experiment: str) -> None:
    small = ["data.batch_size=4", "data.eval_batch_size=4", *SMOKE_OVERRIDES.get(experiment, [])]
    results = run(
        make_cfg(
            f"experiment={experiment}",
            "trainer.max_steps=2",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            *small,
        )
    )
    # `python train.py` with no recipe (experiment=default) is named "train" (conf/experiment/default.yaml)
    name = "train" if experiment == "default" else experiment
    assert results["steps"] == 2 and results["experiment"] == name
    if experiment.endswith("_spt"):  # self-pretraining: the test split's denoising loss (docs/spt.md)
        assert results["test/loss"] > 0.0 and results["val/loss_best"] > 0.0
    else:
        assert 0.0 <= results["test/acc"] <= 1.0


class TinyClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(input))


SCHEDULERS = sorted(p.stem for p in (CONF_DIR / "scheduler").glob("*.yaml"))
OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))
TRANSFORMER_TASKS = {p.stem for p in (CONF_DIR / "arch" / "transformer").glob("*.yaml")}


def one_update(cfg: DictConfig, net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """One update of `net` with the config's optimizer and schedule (as the module builds them); the lr it used."""
    groups = parameter_groups(net, cfg.optimizer.weight_decay, cfg.module.no_weight_decay)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=groups)
    schedule = hydra.utils.instantiate(cfg.scheduler)(optimizer, total_steps=cfg.trainer.max_steps)
    lr = optimizer.param_groups[0]["lr"]
    before = [p.detach().clone() for p in net.parameters()]
    torch.nn.functional.cross_entropy(net(**batch), torch.zeros(2, dtype=torch.long)).backward()
    optimizer.step()
    schedule.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    return lr


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_scheduler_and_optimizer_steps_every_experiment(make_cfg, experiment: str) -> None:
    """Each experiment composed with each scheduler and each optimizer (its values merged into every choice),
    one update each on a tiny net; the Transformer too where the task has its size. Two compositions cover the
    product: the scheduler node depends only on (experiment, scheduler), the optimizer node on (experiment,
    optimizer). The trainer around them is the same for every experiment (one real run each below)."""
    own = make_cfg(f"experiment={experiment}")
    choices = own.hydra.runtime.choices
    other = {
        group: next(c for c in names if c != choices[group])
        for group, names in (("scheduler", SCHEDULERS), ("optimizer", OPTIMIZERS))
    }
    flipped = make_cfg(f"experiment={experiment}", *(f"{g}={c}" for g, c in other.items()))
    net = TinyClassifier()
    for scheduler in (own, flipped):
        for optimizer in (own, flipped):
            cfg = own.copy()
            with open_dict(cfg):
                cfg.scheduler, cfg.optimizer = scheduler.scheduler, optimizer.optimizer
            lr = one_update(cfg, net, {"input": torch.randn(2, 3)})
            assert lr == pytest.approx(cfg.scheduler.warmup_init_lr)
    task = experiment.removesuffix("_chunk")
    if task in TRANSFORMER_TASKS and task == experiment:
        cfg = shrink(make_cfg(f"experiment={experiment}", "model=transformer"))
        transformer = hydra.utils.instantiate(cfg.model)
        length = 8
        x = (
            torch.randint(1, cfg.data.vocab_size, (2, length))
            if cfg.data.input_kind == "tokens"
            else torch.randn(2, length)
        )
        batch = {"input": x, **({"input2": x} if cfg.data.dual_encoder else {})}
        one_update(cfg, transformer, batch)


@pytest.mark.parametrize("switch", ["scheduler=cosine", "optimizer=adamw", "model=transformer"])
def test_recipe_switches_train(make_cfg, switch: str) -> None:
    """The switches docs/recipes.md documents, through the real trainer (the recipe's own choices run above)."""
    results = run(make_cfg("experiment=lra_listops", switch, "trainer.max_steps=2", "data.batch_size=4"))
    assert results["steps"] == 2 and switch in results["overrides"]


def test_results_json_and_wandb_offline(make_cfg) -> None:
    cfg = make_cfg("logger=wandb", "tags=[unit]")
    results = run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    for key in (
        "val/acc_best",
        "test/acc",
        "test/loss",
        "params/total",
        "params/embedding",
        "steps",
        "wall_seconds",
        "train/samples_per_second",
        "experiment",
        "overrides",
    ):
        assert results[key] is not None, key
    assert results["steps"] == 4 and "logger=wandb" in results["overrides"]
    assert 0 < results["params/embedding"] < results["params/total"]
    assert Path(results["best_checkpoint"]).parent == run_dir / "checkpoints"
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (
        run_dir / "csv" / "version_0" / "metrics.csv"
    ).exists()
    # the offline W&B run is named by the run dir's id and finished after the job
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert [p.name.endswith(stable_id(str(run_dir))) for p in wandb_runs] == [True]
    assert wandb.run is None


def test_resume_ends_with_the_same_weights(make_cfg) -> None:
    common = [
        "trainer.max_steps=6",
        "trainer.limit_train_batches=null",
        "data.batch_size=64",
        "callbacks.periodic_checkpoint.every_n_train_steps=3",
    ]
    straight = make_cfg(*common, run="straight")
    run(straight)

    crashed = make_cfg(
        *common,
        "+callbacks.crash._target_=tests.test_train.CrashAtStep",
        "+callbacks.crash.step=3",
        run="resumed",
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed)
    resumed_dir = Path(crashed.paths.output_dir)
    assert torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3

    results = run(make_cfg(*common, f"ckpt_path={resumed_dir}", run="resumed"))
    assert results["steps"] == 6
    expected = weights(Path(straight.paths.output_dir) / "checkpoints" / "last.ckpt")
    actual = weights(resumed_dir / "checkpoints" / "last.ckpt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_checkpoint_of_another_model_config_is_refused(make_cfg) -> None:
    first = make_cfg("trainer.max_steps=2", "trainer.limit_train_batches=1", run="first")
    run(first)
    other = make_cfg("trainer.max_steps=4", f"ckpt_path={first.paths.output_dir}", run="first")
    with open_dict(other):
        other.model.attention_activation = "laplace"  # same parameter shapes: only the option check can tell
    with pytest.raises(
        ValueError, match="model.attention_activation: checkpoint 'softmax' vs config 'laplace'"
    ):
        run(other)


def test_activation_checkpointing_trains_to_the_same_weights(make_cfg) -> None:
    """model.activation_checkpointing=true through the trainer: the weights of the plain run (dropout on, same
    seed); a run resumes with the option switched (it changes no weight, so the option check lets it through)."""
    common = ["trainer.max_steps=2", "trainer.limit_train_batches=null"]
    plain = make_cfg(*common, run="plain")
    checkpointed = make_cfg(*common, "model.activation_checkpointing=true", run="checkpointed")
    assert plain.model.dropout_prob > 0
    for cfg in (plain, checkpointed):
        assert run(cfg)["steps"] == 2
    expected = weights(Path(plain.paths.output_dir) / "checkpoints" / "last.ckpt")
    actual = weights(Path(checkpointed.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    resumed = make_cfg(
        "trainer.max_steps=3",
        "model.activation_checkpointing=true",
        f"ckpt_path={plain.paths.output_dir}",
        run="plain",
    )
    assert run(resumed)["steps"] == 3


def test_load_net_rebuilds_the_trained_network(make_cfg) -> None:
    cfg = make_cfg("trainer.max_steps=2", "trainer.limit_train_batches=1", run="trained")
    run(cfg)
    run_dir = Path(cfg.paths.output_dir)
    net = load_net(run_dir)  # the run dir's last.ckpt
    assert isinstance(net, mega.MegaForSequenceClassification) and not net.training
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["net_class"] == "mega.classifier.MegaForSequenceClassification"
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state["state_dict"][f"net.{name}"]), name
    assert (
        load_net(run_dir / "checkpoints" / "last.ckpt", mega.MegaForSequenceClassification).config
        == net.config
    )


def test_checkpoint_paths_and_run_ids(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"")
    assert checkpoint_file(str(tmp_path)) == last == checkpoint_file(str(last))
    assert run_dir_of(str(last)) == tmp_path == run_dir_of(str(tmp_path))
    assert resume_dir(None, "outputs/x") == "outputs/x"
    assert stable_id(str(tmp_path)) == stable_id(str(tmp_path / ".")) != stable_id("elsewhere")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        checkpoint_file(str(tmp_path / "missing"))


def test_weight_decay_groups() -> None:
    net = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    (everything,) = parameter_groups(net, 0.01, [])
    assert len(everything["params"]) == 5 and everything["weight_decay"] == 0.01
    decay, no_decay = parameter_groups(net, 0.01, ["bias", "norm", "embedding"])
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])] and no_decay["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="module.no_weight_decay has unknown kinds"):
        parameter_groups(net, 0.01, ["gamma"])


def test_schedules() -> None:
    def lrs(make, steps: int) -> list[float]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = make(optimizer)
        values = []
        for _ in range(steps):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        return values

    linear = lrs(lambda o: linear_decay(o, total_steps=10, warmup_steps=4), 11)
    assert linear[0] == pytest.approx(1e-7) and linear[2] == pytest.approx(0.5, abs=1e-6)
    assert linear[4] == pytest.approx(1.0) and linear[7] == pytest.approx(0.5) and linear[10] == 0.0
    squared = lrs(lambda o: linear_decay(o, total_steps=10, warmup_steps=4, warmup_power=2), 3)
    assert squared[2] == pytest.approx(0.25, abs=1e-6)
    cos = lrs(lambda o: cosine(o, total_steps=10, warmup_steps=2), 11)
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5) and cos[10] == pytest.approx(0.0)
    cos = lrs(lambda o: cosine(o, total_steps=10, warmup_steps=2, warmup_power=2, end_lr=0.1), 11)
    assert (
        cos[1] == pytest.approx(0.25, abs=1e-6)
        and cos[6] == pytest.approx(0.55)
        and cos[10] == pytest.approx(0.1)
    )


@pytest.mark.slow
def test_multirun_makes_separate_runs(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "train.py",
        "-m",
        "experiment=lra_listops_demo",
        "model.chunk_size=16,32",
        "trainer.max_steps=5",
        "data.synthetic=true",
        "logger=wandb",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        *[f"model.{k}={v}" for k, v in TINY_MODEL.items()],
    ]
    subprocess.run(
        command,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env={"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=600,
    )
    results = sorted(tmp_path.glob("outputs/lra_listops_demo/multiruns/*/*/results.json"))
    assert len(results) == 2
    ids = {p.name.rsplit("-", 1)[1] for r in results for p in (r.parent / "wandb").glob("offline-run-*")}
    assert len(ids) == 2
    assert {tuple(json.loads(r.read_text())["overrides"])[1] for r in results} == {
        "model.chunk_size=16",
        "model.chunk_size=32",
    }
