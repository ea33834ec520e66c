"""Self-pretraining on a task's own inputs (docs/spt.md): the masking rule and the LightningModule.

Every batch is a Contract-1 batch (labels unused). The masked objective hides each real position with probability
`mask_rate` (never padding) and predicts the hidden values from the rest; the causal objective predicts position
t + 1 from positions <= t. Two-document batches (Retrieval) are treated document by document, both in the loss.
Hidden positions are drawn from torch's global RNG while training (saved in checkpoints: a resumed run draws the same
masks) and from a generator seeded by (seed, stage, batch) for validation and test (the same masks every time).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric, MinMetric

from mega.lm import IGNORE_INDEX
from mega.pretraining import SelfPretrainingModel
from tasks.training.classifier import ClassificationModule

log = logging.getLogger(__name__)

DOCUMENTS = (("input", "mask"), ("input2", "mask2"))  # the documents of a batch, each with its padding mask
EVAL_STAGES = {"val": 1, "test": 2}


def real_positions(input: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, L] bool: True on real (not padded) positions."""
    return torch.ones(input.shape[:2], dtype=torch.bool, device=input.device) if mask is None else mask.bool()


def choose_hidden(real: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, L] bool: each real position independently with probability `rate` (the reference's Bernoulli rule),
    and one real position drawn uniformly in a sequence where none was (so every sequence has a target)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"module.mask_rate={rate} must be in (0, 1)")
    draws = torch.rand(real.shape, generator=generator, device=generator.device if generator else real.device)
    hidden = (draws.to(real.device) < rate) & real
    empty = ~hidden.any(1) & real.any(1)
    if bool(empty.any()):
        weights = real[empty].float()
        picks = torch.multinomial(weights.cpu(), 1, generator=generator).to(real.device)
        hidden[empty] = F.one_hot(picks.squeeze(1), real.size(1)).bool()
    return hidden


def next_is_real(real: torch.Tensor) -> torch.Tensor:
    """[B, L] bool: positions t whose next position t + 1 is real (what the causal objective predicts from)."""
    return F.pad(real[:, 1:], (0, 1), value=False) & real


def labels_at(targets: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Targets where chosen, elsewhere IGNORE_INDEX (class targets) or NaN (values): nothing else is scored."""
    ignore = IGNORE_INDEX if not targets.is_floating_point() else float("nan")
    return targets.masked_fill(~chosen, ignore)


class PretrainingModule(ClassificationModule):
    """Self-pretraining of the classifier's encoder; optimizer groups, schedules, resume state, throughput and the
    model-options check are the classification module's. Logs `<stage>/loss` (and `<stage>/token_acc` for class
    targets) and `val/loss_best`.

    Args:
        net: the classifier (`${model}`); its encoder is pretrained, its head is not used (fine-tuning builds a new
            one). Checkpoints hold a `mega.pretraining.SelfPretrainingModel` (`load_net` rebuilds it).
        objective: "masked" or "causal".
        mask_rate: masked: the probability of hiding each real position.
        target: what is predicted; null: "tokens" for token inputs, "values" for real ones. "levels": the grey
            level round(levels_max · (x·value_std + value_mean)) of a normalised pixel x, as `levels` classes.
        levels, value_mean, value_std: the levels target (value_mean/std: the data's pixel normalisation).
        compile: as the classification module's.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., LambdaLR] | None = None,
        no_weight_decay: Sequence[str] = (),
        objective: str = "masked",
        mask_rate: float = 0.5,
        target: str | None = None,
        levels: int = 256,
        value_mean: float | None = None,
        value_std: float | None = None,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        input_kind = net.config.input_kind
        target = target or ("tokens" if input_kind == "tokens" else "values")
        classes = {"tokens": net.config.vocab_size, "levels": levels, "values": 1}.get(target, 0)
        if target == "levels" and (value_mean is None or value_std is None):
            raise ValueError(
                "module.target=levels needs module.value_mean and module.value_std (the data's pixel "
                "normalisation, e.g. ${data.pixel_mean} and ${data.pixel_std})"
            )
        if objective == "masked":
            choose_hidden(torch.ones(1, 1, dtype=torch.bool), mask_rate)  # checks the rate now, not at step 1
        pretrainer = SelfPretrainingModel.around(net, objective, target, classes)
        if objective == "causal":
            check_causal(pretrainer)
        super().__init__(pretrainer, optimizer, scheduler, max(classes, 2), no_weight_decay, compile=compile)
        self.save_hyperparameters(
            {"objective": objective, "mask_rate": mask_rate, "target": target, "levels": levels}
        )
        self.objective, self.mask_rate, self.target = objective, mask_rate, target
        self.levels, self.value_mean, self.value_std = levels, value_mean, value_std
        self.loss_mean = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in ("train", *EVAL_STAGES)})
        self.val_loss_best = MinMetric()
        self.eval_seed = int(torch.initial_seed()) % 2**31  # the run's `seed` (seed_everything): eval masks

    def on_fit_start(self) -> None:
        super().on_fit_start()
        log.info(
            "Self-pretraining: objective=%s target=%s%s",
            self.objective,
            self.target,
            f" mask_rate={self.mask_rate}" if self.objective == "masked" else "",
        )

    def targets(self, input: torch.Tensor) -> torch.Tensor:
        """What each position holds, as the head predicts it: token ids, grey levels, or the value."""
        if self.target != "levels":
            return input
        grey = (input.float() * self.value_std + self.value_mean) * (self.levels - 1)
        return grey.round().clamp(0, self.levels - 1).long()

    def _document(
        self, input: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, labels) of one document, flattened over the positions that are scored."""
        real = real_positions(input, mask)
        targets = self.targets(input)
        if self.objective == "masked":
            hidden = choose_hidden(real, self.mask_rate, generator)
            predictions = self.net(input, mask, replace=hidden)
            labels = labels_at(targets, hidden)
        else:
            predictions = self.net(input, mask)
            chosen = next_is_real(real)
            labels = labels_at(F.pad(targets[:, 1:], (0, 1)), chosen)  # position t predicts t + 1
        return predictions.flatten(0, 1), labels.flatten()

    def _step(self, batch: dict[str, torch.Tensor], stage: str, batch_idx: int = 0) -> torch.Tensor:
        generator = None
        if stage in EVAL_STAGES:  # the same masks at every evaluation
            seed = self.eval_seed * 1_000_003 + EVAL_STAGES[stage] * 100_003 + batch_idx
            generator = torch.Generator().manual_seed(seed)
        parts = [
            self._document(batch[key], batch.get(mask), generator) for key, mask in DOCUMENTS if key in batch
        ]
        predictions = torch.cat([p for p, _ in parts])
        labels = torch.cat([lab for _, lab in parts])
        if self.target == "values":
            scored = ~labels.isnan()
            loss = F.l1_loss(predictions[scored].float(), labels[scored].float())
        else:
            scored = labels != IGNORE_INDEX
            loss = F.cross_entropy(predictions.float(), labels, ignore_index=IGNORE_INDEX)
            self.acc[f"{stage}_acc"](predictions[scored], labels[scored])
        size = int(scored.sum())
        on_step = stage == "train"
        self.loss_mean[f"{stage}_loss"](loss.detach(), size)
        self.log(
            f"{stage}/loss", self.loss_mean[f"{stage}_loss"], on_step=on_step, on_epoch=True, prog_bar=True
        )
        if self.target != "values":
            self.log(
                f"{stage}/token_acc",
                self.acc[f"{stage}_acc"],
                on_step=on_step,
                on_epoch=True,
                batch_size=size,
            )
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val", batch_idx)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test", batch_idx)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_loss_best(self.loss_mean["val_loss"].compute())
        self.log("val/loss_best", self.val_loss_best.compute(), prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["pretraining"] = {
            "objective": self.objective,
            "mask_rate": self.mask_rate if self.objective == "masked" else None,
            "target": self.target,
        }


def check_causal(net: SelfPretrainingModel, length: int = 8) -> None:
    """Fail unless position t of the encoder's output depends only on positions <= t (the causal objective would
    otherwise read its targets): one probe in eval mode, changing the last position; and no BatchNorm (its batch
    statistics mix every position while training)."""
    options = net.config.classifier_options
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        raise ValueError(
            f"module.objective=causal: model.normalization_type={options.get('normalization_type')!r} normalises "
            "with statistics over every position while training, so position t sees later ones; use layernorm, "
            "scalenorm or rmsnorm (and the same in the fine-tuning run)"
        )
    tokens = options.get("input_kind", "tokens") == "tokens"
    probe = torch.randint(1, options["vocab_size"], (1, length)) if tokens else torch.randn(1, length)
    changed = probe.clone()
    changed[0, -1] = probe[0, -1] % (options["vocab_size"] - 1) + 1 if tokens else probe[0, -1] + 1.0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        before, after = net(probe), net(changed)
    net.train(was_training)
    if not torch.allclose(before[:, :-1], after[:, :-1], rtol=1e-4, atol=1e-5):  # FFT round-off is ~1e-7
        raise ValueError(
            "module.objective=causal needs a causal encoder (position t sees only positions <= t), but this one "
            "reads later positions: for MEGA set model.bidirectional=false model.is_decoder=true, for the "
            "Transformer model.is_decoder=true (and the same options in the fine-tuning run)"
        )
