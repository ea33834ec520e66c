"""Self-pretraining (docs/spt.md): the masking rule, the pretraining net and module, init_from, the chained command."""

from __future__ import annotations

import csv
import functools
import importlib
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict

import mega
import train
from experiments import spt
from mega.lm import IGNORE_INDEX
from mega.pretraining import SelfPretrainingModel
from tasks.training.init_from import initialise_encoder
from tasks.training.pretraining import PretrainingModule, check_causal, choose_hidden, labels_at, next_is_real
from tasks.training.state import load_net
from tests.conftest import TINY_MODEL, compose_config

TINY = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
SMALL = ["data.batch_size=4", "data.eval_batch_size=4", *TINY]
MEGA_OPTIONS = dict(vocab_size=20, pad_token_id=0, num_labels=3, dropout_prob=0.0, **TINY_MODEL)


def optimizer():
    return functools.partial(torch.optim.AdamW, lr=1e-3)


# ---- the masking rule -------------------------------------------------------------------------------------------


def test_masking_hides_the_rate_of_real_positions_never_padding():
    real = torch.ones(64, 300, dtype=torch.bool)
    lengths = torch.randint(1, 301, (64,), generator=torch.Generator().manual_seed(0))
    real &= torch.arange(300) < lengths[:, None]
    hidden = choose_hidden(real, 0.3, torch.Generator().manual_seed(1))
    assert not (hidden & ~real).any()  # never padding
    assert hidden.any(1).all()  # every sequence has something to predict, even of length 1
    fraction = hidden.sum() / real.sum()
    n = int(real.sum())
    assert (
        abs(float(fraction) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n) + 64 / n
    )  # Bernoulli(0.3), ≤ 1 forced per row
    assert torch.equal(hidden, choose_hidden(real, 0.3, torch.Generator().manual_seed(1)))  # eval: same masks
    with pytest.raises(ValueError, match="module.mask_rate=1.0"):
        choose_hidden(real, 1.0)


def test_labels_only_at_chosen_positions_and_causal_targets():
    chosen = torch.tensor([[True, False, True, False]])
    ids = torch.tensor([[5, 6, 7, 8]])
    assert labels_at(ids, chosen).tolist() == [[5, IGNORE_INDEX, 7, IGNORE_INDEX]]
    values = labels_at(torch.tensor([[0.5, -1.0, 2.0, 3.0]]), chosen)
    assert values[0, 0] == 0.5 and values[0, 1].isnan() and values[0, 3].isnan()
    real = torch.tensor([[True, True, True, False]])
    assert next_is_real(real).tolist() == [[True, True, False, False]]  # the last real token predicts nothing


# ---- the pretraining net ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "classifier, options",
    [
        (mega.MegaForSequenceClassification, MEGA_OPTIONS),
        (mega.MegaForSequenceClassification, {**MEGA_OPTIONS, "input_kind": "real", "chunk_size": 4}),
        (
            mega.TransformerForSequenceClassification,
            dict(vocab_size=20, hidden_size=16, num_attention_heads=2),
        ),
        (mega.MegalodonForSequenceClassification, {**MEGA_OPTIONS, "norm_num_groups": 2}),
    ],
    ids=["mega", "mega-chunk-real", "transformer-cls", "megalodon"],
)
def test_hidden_positions_are_not_read(classifier, options):
    torch.manual_seed(0)
    net = classifier(**options)
    real = options.get("input_kind") == "real"
    pretrainer = SelfPretrainingModel.around(
        net, "masked", "values" if real else "tokens", 1 if real else 20
    ).eval()
    assert pretrainer.encoder is net.encoder  # the classifier's own encoder is trained
    x = torch.randn(2, 12) if real else torch.randint(1, 20, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    hidden = torch.zeros(2, 12, dtype=torch.bool)
    hidden[:, [2, 5]] = True
    other = x.clone()
    other[:, [2, 5]] = torch.randn(2, 2) if real else torch.randint(1, 20, (2, 2))
    out = pretrainer(x, mask, replace=hidden)
    assert out.shape == ((2, 12) if real else (2, 12, 20))
    assert torch.equal(out, pretrainer(other, mask, replace=hidden))
    assert not torch.equal(out, pretrainer(x, mask))  # without replacement the values are read


def test_pretraining_net_round_trips_through_its_options():
    pretrainer = SelfPretrainingModel.around(
        mega.MegaForSequenceClassification(**MEGA_OPTIONS), "masked", "tokens", 20
    )
    options = pretrainer.config.to_dict()
    assert options["pretraining_classifier"] == "mega.classifier.MegaForSequenceClassification"
    rebuilt = SelfPretrainingModel(**options)
    assert rebuilt.state_dict().keys() == pretrainer.state_dict().keys()
    with pytest.raises(ValueError, match="does not fit input_kind='tokens'"):
        SelfPretrainingModel.around(mega.MegaForSequenceClassification(**MEGA_OPTIONS), "masked", "values", 1)


def test_causal_objective_needs_a_causal_encoder():
    bidirectional = mega.MegaForSequenceClassification(**MEGA_OPTIONS)
    with pytest.raises(ValueError, match="model.bidirectional=false model.is_decoder=true"):
        check_causal(SelfPretrainingModel.around(bidirectional, "causal", "tokens", 20))
    causal = {**MEGA_OPTIONS, "bidirectional": False, "is_decoder": True, "chunk_size": 4}
    check_causal(
        SelfPretrainingModel.around(mega.MegaForSequenceClassification(**causal), "causal", "tokens", 20)
    )
    transformer = mega.TransformerForSequenceClassification(
        vocab_size=20, hidden_size=16, num_attention_heads=2
    )
    with pytest.raises(ValueError, match="Transformer model.is_decoder=true"):
        check_causal(SelfPretrainingModel.around(transformer, "causal", "tokens", 20))
    causal_transformer = mega.TransformerForSequenceClassification(
        vocab_size=20, hidden_size=16, num_attention_heads=2, is_decoder=True, dropout_prob=0.0
    )
    check_causal(SelfPretrainingModel.around(causal_transformer, "causal", "tokens", 20))
    batchnorm = {**causal, "normalization_type": "batchnorm"}
    with pytest.raises(ValueError, match="'batchnorm' normalises with statistics over every position"):
        PretrainingModule(mega.MegaForSequenceClassification(**batchnorm), optimizer(), objective="causal")


def test_both_documents_are_pretrained():
    net = mega.MegaForSequenceClassification(**MEGA_OPTIONS, dual_encoder=True)
    module = PretrainingModule(net, optimizer(), mask_rate=0.5)
    seen = []
    module.net.register_forward_hook(lambda _, args, __: seen.append(args[0].shape))
    batch = {
        "input": torch.randint(1, 20, (2, 7)),
        "input2": torch.randint(1, 20, (2, 9)),
        "mask2": torch.ones(2, 9, dtype=torch.bool),
        "label": torch.tensor([0, 1]),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "log", lambda *a, **k: None)
        loss = module._step(batch, "val")
    assert seen == [torch.Size([2, 7]), torch.Size([2, 9])] and loss > 0


def test_grey_level_targets_are_the_pixels():
    net = mega.MegaForSequenceClassification(**{**MEGA_OPTIONS, "input_kind": "real"})
    module = PretrainingModule(net, optimizer(), target="levels", value_mean=0.5, value_std=0.5)
    pixels = torch.tensor([[0, 1, 127, 254, 255]])
    assert torch.equal(module.targets((pixels / 255 - 0.5) / 0.5), pixels)
    with pytest.raises(ValueError, match="module.value_mean and module.value_std"):
        PretrainingModule(net, optimizer(), target="levels")


# ---- the training app: loss falls, init_from starts from the pretrained encoder ---------------------------------


def run(cfg) -> dict:
    train.main(cfg)
    return json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())


def test_pretraining_loss_falls_on_a_stand_in_set(make_cfg):
    cfg = make_cfg(
        "experiment=lra_listops_spt",
        *SMALL,
        "data.batch_size=16",
        "trainer.max_steps=30",
        "trainer.limit_train_batches=null",
        "trainer.val_check_interval=10",
        "trainer.check_val_every_n_epoch=null",
        "optimizer.lr=0.02",
        "scheduler.warmup_steps=5",
    )
    results = run(cfg)
    rows = list(csv.DictReader(open(next(Path(cfg.paths.output_dir).glob("csv/*/metrics.csv")))))
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 3 and val[0] > val[1] > val[2], val  # falls at every validation
    assert val[-1] < math.log(cfg.data.vocab_size) - 0.3  # well below the uniform guess over the vocabulary
    assert results["val/loss_best"] == pytest.approx(min(val))
    net = load_net(Path(cfg.paths.output_dir))  # a pretraining checkpoint rebuilds like any other
    assert isinstance(net, SelfPretrainingModel) and net.config.pretraining_objective == "masked"


class EncoderAtStart(L.Callback):
    """Keeps a copy of the net's weights when training starts (after init_from, before the first update)."""

    seen: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        EncoderAtStart.seen = {k: v.clone() for k, v in module.net.state_dict().items()}


def test_fine_tuning_starts_from_exactly_the_pretrained_encoder(make_cfg):
    pre = make_cfg("experiment=lra_listops_spt", *SMALL, run="pre")
    run(pre)
    pre_dir = Path(pre.paths.output_dir)  # (resolved now: it follows the Hydra config composed last)
    ckpt = torch.load(pre_dir / "checkpoints" / "last.ckpt", weights_only=True)
    fine = make_cfg(
        "experiment=lra_listops",
        *SMALL,
        f"init_from={pre_dir}",
        "+callbacks.probe._target_=tests.test_spt.EncoderAtStart",
        run="fine",
    )
    results = run(fine)
    start = importlib.import_module("tests.test_spt").EncoderAtStart.seen  # the class Hydra instantiated
    encoder = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("net.encoder.")}
    assert len(encoder) > 10
    for name, tensor in encoder.items():
        assert torch.equal(start[name.removeprefix("net.")], tensor), name
    head = [k for k in start if k.startswith("head.")]
    assert head and not any(f"net.{k}" in ckpt["state_dict"] for k in head)  # a fresh head
    record = results["init_from"]
    assert record["run_dir"] == str(pre_dir) and record["finished"] and record["step"] == 4
    assert record["experiment"] == "lra_listops_spt" and record["pretraining"]["mask_rate"] == 0.5


def save_checkpoint(path: Path, net: torch.nn.Module) -> Path:
    from tasks.training.state import net_class_name, options_of

    state = {k: v for k, v in net.state_dict().items()}
    torch.save(
        {
            "state_dict": {f"net.{k}": v for k, v in state.items()},
            "net_options": options_of(net),
            "net_class": net_class_name(net),
            "global_step": 7,
        },
        path,
    )
    return path


def test_init_from_names_the_option_that_differs(tmp_path):
    source = SelfPretrainingModel.around(
        mega.MegaForSequenceClassification(**MEGA_OPTIONS), "masked", "tokens", 20
    )
    ckpt = save_checkpoint(tmp_path / "pre.ckpt", source)
    same = mega.MegaForSequenceClassification(**{**MEGA_OPTIONS, "num_labels": 5, "dropout_prob": 0.1})
    record = initialise_encoder(same, ckpt)  # head options and dropout may differ
    assert record["step"] == 7 and not record["finished"]
    for name, tensor in source.encoder.state_dict().items():
        assert torch.equal(same.encoder.state_dict()[name], tensor)
    wider = mega.MegaForSequenceClassification(**{**MEGA_OPTIONS, "hidden_size": 24})
    with pytest.raises(ValueError, match="model.hidden_size: checkpoint 16 vs config 24"):
        initialise_encoder(wider, ckpt)
    transformer = mega.TransformerForSequenceClassification(
        vocab_size=20, hidden_size=16, num_attention_heads=2
    )
    with pytest.raises(
        ValueError, match=r"holds the encoder of a mega.classifier.MegaForSequenceClassification.*model="
    ):
        initialise_encoder(transformer, ckpt)
    with pytest.raises(FileNotFoundError, match="init_from=.*missing: no checkpoint"):
        initialise_encoder(same, tmp_path / "missing")


# ---- the chained command ----------------------------------------------------------------------------------------


def in_process(data_dir: Path):
    """A runner of experiments.spt that runs train.py's app in this process (a failed run returns 1)."""

    def runner(overrides: list[str]) -> int:
        run_dir = spt.option(overrides, "hydra.run.dir") or spt.option(overrides, "ckpt_path")
        rest = [o for o in overrides if not o.startswith("hydra.run.dir=")]
        try:
            train.main(compose_config(["debug=smoke", *rest], Path(run_dir), data_dir))
        except RuntimeError:
            return 1
        return 0

    return runner


CRASH = ["+callbacks.crash._target_=tests.test_train.CrashAtStep", "+callbacks.crash.step=2"]


def chain(tmp_path, data_dir, name, pretrain=(), finetune=()) -> int:
    # smoke runs: epochs of 2 batches, checkpoints every 2 steps, 4 steps per stage (a crash at step 2 follows the
    # first validation)
    shared = [*SMALL, "seed=3"]
    return spt.run_chain(
        "lra_listops", shared, list(pretrain), list(finetune), tmp_path / name, in_process(data_dir)
    )


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_chain_resumes_after_a_kill_in_either_stage(tmp_path, data_dir):
    assert chain(tmp_path, data_dir, "straight") == 0
    record = json.loads((tmp_path / "straight" / "chain.json").read_text())
    assert [s["state"] for s in record["stages"].values()] == ["done", "done"]

    assert chain(tmp_path, data_dir, "pre", pretrain=CRASH) == 1  # killed in the pretraining
    assert not (tmp_path / "pre" / "finetune").exists()  # fine-tuning waits for a finished pretraining
    assert chain(tmp_path, data_dir, "pre") == 0

    assert chain(tmp_path, data_dir, "fine", finetune=CRASH) == 1  # killed in the fine-tuning
    assert chain(tmp_path, data_dir, "fine") == 0
    stages = json.loads((tmp_path / "fine" / "chain.json").read_text())["stages"]
    assert "ckpt_path=" in stages["finetune"]["command"] and stages["pretrain"]["state"] == "done"

    expected = final_weights(tmp_path / "straight")
    for resumed in ("pre", "fine"):
        actual = final_weights(tmp_path / resumed)
        assert actual.keys() == expected.keys()
        for name in expected:
            assert torch.equal(actual[name], expected[name]), (resumed, name)
    results = json.loads((tmp_path / "fine" / "finetune" / "results.json").read_text())
    assert results["init_from"]["run_dir"] == str(tmp_path / "fine" / "pretrain")


def test_chain_commands(tmp_path, capsys):
    assert (
        spt.main(
            [
                "experiment=lra_image",
                "seed=2",
                "--finetune",
                "trainer.max_steps=9",
                "--dir",
                str(tmp_path),
                "--dry-run",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"experiment=lra_image_spt seed=2 hydra.run.dir={tmp_path / 'pretrain'}" in out
    assert f"experiment=lra_image seed=2 trainer.max_steps=9 init_from={tmp_path / 'pretrain'}" in out
    with pytest.raises(SystemExit, match="has no pretraining experiment"):
        spt.main(["experiment=lm_demo", "--dry-run", "--dir", str(tmp_path)])
    with open_dict(cfg := compose_config(["experiment=lra_image_chunk_spt"], tmp_path / "r", tmp_path / "d")):
        assert cfg.name == "lra_image_chunk_spt" and cfg.model.chunk_size == 128
        assert cfg.module._target_.endswith("PretrainingModule") and cfg.monitor == "val/loss"
    for model in ("megalodon", "megalodon_chunk"):  # the fine-tuning run's Megalodon, as for MEGA
        pre = compose_config(["experiment=lra_text_spt", f"model={model}"], tmp_path / "r", tmp_path / "d")
        fine = compose_config(["experiment=lra_text", f"model={model}"], tmp_path / "f", tmp_path / "d")
        assert pre.model == fine.model and pre.model._target_ == "mega.MegalodonForSequenceClassification"


# the recipes of docs/spt.md#recipes, transcribed: objective, rate, target, batch, accumulation, lr, weight decay,
# warm-up, updates
SPT_RECIPES = {
    "lra_listops_spt": ("masked", 0.5, "tokens", 64, 1, 0.001, 0.01, 2000, 150_000),
    "lra_text_spt": ("masked", 0.5, "tokens", 25, 2, 0.004, 0.01, 5000, 14_400),
    "lra_retrieval_spt": ("masked", 0.5, "tokens", 8, 8, 0.003, 0.04, 2000, 73_568),
    "lra_image_spt": ("masked", 0.5, "values", 50, 1, 0.01, 0.02, 2500, 90_000),
    "lra_pathfinder_spt": ("masked", 0.5, "levels", 32, 1, 0.0005, 0.0, 2500, 250_000),
    "lra_pathx_spt": ("masked", 0.5, "levels", 16, 2, 0.0005, 0.0, 5000, 1_000_000),
    "sc_raw_spt": ("masked", 0.5, "values", 20, 1, 0.01, 0.01, 2000, 49_000),
}


@pytest.mark.parametrize("experiment", sorted(SPT_RECIPES))
def test_spt_recipe_values(tmp_path, experiment):
    cfg = compose_config([f"experiment={experiment}"], tmp_path / "run", tmp_path / "data")
    objective, rate, target, batch, accumulate, lr, decay, warmup, updates = SPT_RECIPES[experiment]
    module = cfg.module
    assert (module.objective, module.mask_rate, module.target) == (objective, rate, target)
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches) == (batch, accumulate)
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, list(cfg.optimizer.betas)) == (
        lr,
        decay,
        [0.9, 0.98],
    )
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.warmup_power, cfg.trainer.max_steps) == (
        warmup,
        1,
        updates,
    )
    assert cfg.scheduler.end_lr == cfg.optimizer.lr  # constant after the warm-up
    assert (cfg.monitor, cfg.monitor_mode, cfg.name) == ("val/loss", "min", experiment)
    finetune = compose_config(
        [f"experiment={experiment.removesuffix('_spt')}"], tmp_path / "ft", tmp_path / "data"
    )
    assert cfg.model == finetune.model  # the fine-tuning run's model, so init_from loads it
    assert cfg.optimizer._target_ == finetune.optimizer._target_


def test_a_mismatched_init_from_fails_before_the_run_starts(make_cfg, tmp_path):
    cfg = make_cfg("experiment=lra_listops", *SMALL, run="fine")
    with open_dict(cfg):
        options = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k[0] != "_"}
    wider = mega.MegaForSequenceClassification(**{**options, "hidden_size": 24})
    ckpt = save_checkpoint(tmp_path / "wide.ckpt", SelfPretrainingModel.around(wider, "masked", "tokens", 16))
    with open_dict(cfg):
        cfg.init_from = str(ckpt)
    with pytest.raises(ValueError, match=r"model.hidden_size: checkpoint 24 vs config 16.*with init_from="):
        train.main(cfg)
    assert not (Path(cfg.paths.output_dir) / ".hydra").exists()  # refused before the run dir was written
