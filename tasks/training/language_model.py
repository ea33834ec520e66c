"""The LightningModule of language modelling: next-token cross-entropy, perplexity, samples at the end.

Batches are the LM extension of Contract 1 (`tasks.data.text_file`): `label` [B, L] holds the target ids with -100
where nothing is predicted; the causal head shifts them (position t predicts label t + 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import MinMetric
from torchmetrics.text import Perplexity

from mega.lm import IGNORE_INDEX, shift_for_next_token
from tasks.data.base import SPLITS
from tasks.data.tokenizers import BYTE_VOCAB_SIZE, decode, encode
from tasks.training.classifier import ClassificationModule

log = logging.getLogger(__name__)


class LanguageModelModule(ClassificationModule):
    """Next-token cross-entropy on LM batches; logs loss, perplexity and next-token accuracy per stage; samples
    text from the model when training ends (logged, and written to `<run dir>/samples.txt`).

    The optimizer groups, schedules, checkpoint checks, resume state and throughput logging are the
    classification module's (`ClassificationModule`); `num_classes` is the vocabulary size.

    Args:
        sample_prompts: texts to continue at the end of training ([] for none).
        sample_tokens: bytes generated per prompt.
        temperature, top_k: sampling options of MegaForCausalLM.generate.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Any,
        scheduler: Any = None,
        num_classes: int = BYTE_VOCAB_SIZE,
        no_weight_decay: Sequence[str] = (),
        sample_prompts: Sequence[str] = (),
        sample_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 20,
        sample_seed: int = 0,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, num_classes, no_weight_decay, compile)
        self.perplexity = nn.ModuleDict({f"{s}_ppl": Perplexity(ignore_index=IGNORE_INDEX) for s in SPLITS})
        self.val_ppl_best = MinMetric()
        self.val_ppl_best.persistent(True)  # in the checkpoint, as val_acc_best
        self.sample_prompts, self.sample_tokens = list(sample_prompts), sample_tokens
        self.temperature, self.top_k, self.sample_seed = temperature, top_k, sample_seed

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        labels = batch["label"]
        out = self.net(batch["input"], attention_mask=batch.get("mask"), labels=labels)
        logits, targets = shift_for_next_token(out.logits, labels)
        predicted = targets != IGNORE_INDEX
        tokens = int(predicted.sum())
        self.acc[f"{stage}_acc"](logits[predicted], targets[predicted])
        self.perplexity[f"{stage}_ppl"](logits.float(), targets)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss",
            out.loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=tokens,
            sync_dist=not on_step,
        )
        self.log(f"{stage}/acc", self.acc[f"{stage}_acc"], on_step=on_step, on_epoch=True, batch_size=tokens)
        self.log(
            f"{stage}/ppl",
            self.perplexity[f"{stage}_ppl"],
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=tokens,
        )
        return out.loss

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        self.val_ppl_best(self.perplexity["val_ppl"].compute())
        self.log("val/ppl_best", self.val_ppl_best.compute(), prog_bar=True, sync_dist=True)

    def on_fit_end(self) -> None:
        if not self.sample_prompts or not self.trainer.is_global_zero:
            return
        generator = torch.Generator(device=self.device).manual_seed(self.sample_seed)
        samples = []
        for prompt in self.sample_prompts:
            ids = torch.tensor([encode(prompt)], device=self.device)
            with torch.compiler.set_stance("force_eager"):  # token-by-token shapes: compiling would not pay
                out = self.net.generate(
                    ids,
                    self.sample_tokens,
                    do_sample=True,
                    temperature=self.temperature,
                    top_k=self.top_k,
                    generator=generator,
                )
            samples.append(decode(out[0].tolist()))
        text = "\n\n".join(
            f"--- sample {i + 1} (prompt {p!r}) ---\n{s}"
            for i, (p, s) in enumerate(zip(self.sample_prompts, samples))
        )
        log.info("Samples after training (temperature %g, top_k %s):\n%s", self.temperature, self.top_k, text)
        out_dir = Path(self.trainer.default_root_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "samples.txt").write_text(text + "\n")
