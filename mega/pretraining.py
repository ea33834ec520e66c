"""Self-pretraining (Amos, Berant and Gupta, "Never Train from Scratch", ICLR 2024): a classifier's encoder with a
per-position prediction head, trained to denoise (masked) or continue (causal) the task's own inputs.

net = SelfPretrainingModel("mega.MegaForSequenceClassification", "masked", "tokens", 257, **classifier_options)
predictions = net(input, mask, replace=chosen)   # chosen: [B, L] bool, the positions to hide (masked objective)

The encoder is the classifier's own (`classifier.encoder`, state-dict keys `encoder.*`), so its weights load into
the classifier for fine-tuning; the classifier head is not built here.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

OBJECTIVES = ("masked", "causal")
TARGETS = (
    "tokens",
    "levels",
    "values",
)  # token ids, quantised grey levels, the (normalised) values themselves
OWN_OPTIONS = ("pretraining_classifier", "pretraining_objective", "pretraining_target", "pretraining_classes")


@dataclass
class SelfPretrainingConfig:
    """The options of a SelfPretrainingModel: its own four and the classifier's (flat, as a checkpoint stores them)."""

    pretraining_classifier: str  # import path of the classifier class whose encoder is pretrained
    pretraining_objective: str  # masked | causal
    pretraining_target: str  # tokens | levels | values
    pretraining_classes: int  # outputs per position: vocabulary size, number of levels, or 1 for values
    classifier_options: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        own = {name: getattr(self, name) for name in OWN_OPTIONS}
        return {**self.classifier_options, **own}


def classifier_class(path: str) -> type[nn.Module]:
    """The class at an import path of the `mega` package (e.g. "mega.MegaForSequenceClassification")."""
    module_name, _, class_name = path.rpartition(".")
    if module_name.split(".")[0] != "mega":
        raise ValueError(f"pretraining_classifier={path!r} is not a class of the mega package")
    return getattr(importlib.import_module(module_name), class_name)


def options_of_classifier(classifier: nn.Module) -> dict[str, Any]:
    """A classifier's constructor options: its `config` (MegaConfig.to_dict() or any dataclass)."""
    config = classifier.config
    return dict(config.to_dict()) if hasattr(config, "to_dict") else dataclasses.asdict(config)


class PretrainingHead(nn.Module):
    """ŷ_t = W h_t + b at every position: logits [B, L, classes] (tokens, levels) or one value [B, L] (values);
    with the masked objective also m, the learned vector that replaces the embedding of a hidden position."""

    def __init__(self, dim: int, objective: str, target: str, classes: int) -> None:
        super().__init__()
        self.target = target
        # a hidden position's embedding is m: for real inputs the same as the reference's extra "is masked" input
        # channel of a linear embedding (x·w + b becomes m·1 + b at hidden positions)
        self.mask_embedding = nn.Parameter(torch.empty(dim)) if objective == "masked" else None
        self.out = nn.Linear(dim, classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.mask_embedding is not None:
            nn.init.normal_(
                self.mask_embedding, std=self.mask_embedding.numel() ** -0.5
            )  # as token embeddings
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.out(hidden)
        return out.squeeze(-1) if self.target == "values" else out


class SelfPretrainingModel(nn.Module):
    """A classifier's encoder and a PretrainingHead; see the module docstring.

    Args:
        pretraining_classifier: import path of the classifier (its encoder is built from `classifier_options`).
        pretraining_objective: "masked" (predict hidden positions from the rest, a bidirectional encoder) or
            "causal" (position t predicts position t + 1; the encoder must be causal).
        pretraining_target: "tokens" (input_kind tokens), "levels" or "values" (input_kind real).
        pretraining_classes: outputs per position (vocabulary size; number of levels; 1 for values).
        encoder: an encoder already built from exactly these options (the classifier's), used instead of a new one.
        classifier_options: the classifier's options.
    """

    def __init__(
        self,
        pretraining_classifier: str,
        pretraining_objective: str,
        pretraining_target: str,
        pretraining_classes: int,
        *,
        encoder: nn.Module | None = None,
        **classifier_options: Any,
    ) -> None:
        super().__init__()
        for option, value, allowed in (
            ("pretraining_objective", pretraining_objective, OBJECTIVES),
            ("pretraining_target", pretraining_target, TARGETS),
        ):
            if value not in allowed:
                raise ValueError(f"{option}={value!r} is not supported; allowed: {', '.join(allowed)}")
        input_kind = classifier_options.get("input_kind", "tokens")
        if (pretraining_target == "tokens") != (input_kind == "tokens"):
            raise ValueError(
                f"pretraining_target={pretraining_target!r} does not fit input_kind={input_kind!r}: token inputs "
                "predict tokens; real-valued inputs predict values or levels"
            )
        if pretraining_target == "values" and pretraining_classes != 1:
            raise ValueError("pretraining_target='values' predicts one number: pretraining_classes must be 1")
        self.config = SelfPretrainingConfig(
            pretraining_classifier,
            pretraining_objective,
            pretraining_target,
            pretraining_classes,
            dict(classifier_options),
        )
        if encoder is None:
            encoder = classifier_class(pretraining_classifier)(**classifier_options).encoder
        self.encoder = encoder
        dim = classifier_options["hidden_size"]
        self.pretraining_head = PretrainingHead(
            dim, pretraining_objective, pretraining_target, pretraining_classes
        )

    @classmethod
    def around(cls, classifier: nn.Module, objective: str, target: str, classes: int) -> SelfPretrainingModel:
        """Pretrain this classifier's encoder (the same module, not a copy)."""
        path = f"{type(classifier).__module__}.{type(classifier).__qualname__}"
        return cls(
            path, objective, target, classes, encoder=classifier.encoder, **options_of_classifier(classifier)
        )

    def forward(
        self, input: torch.Tensor, mask: torch.Tensor | None = None, replace: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predictions for every input position: [B, L, classes] or [B, L] (values).

        replace [B, L] bool: positions whose embedding becomes the learned mask vector (their input is not read).
        """
        embeds = None
        if replace is not None:
            head = self.pretraining_head
            if head.mask_embedding is None:
                raise ValueError(
                    "replace= needs pretraining_objective='masked' (the causal head has no mask vector)"
                )
            input = input.masked_fill(replace, 0)  # the hidden values never reach the encoder
            embeds = self.encoder.embed(input)
            embeds = torch.where(replace.unsqueeze(-1), head.mask_embedding.to(embeds.dtype), embeds)
        hidden = self.encoder(input, mask, inputs_embeds=embeds)
        hidden = hidden[:, hidden.size(1) - input.size(1) :]  # an encoder may prepend states (a <CLS> state)
        return self.pretraining_head(hidden)

    def param_counts(self) -> dict[str, int]:
        embedding = self.encoder.embedding_parameters()
        return {"total": sum(p.numel() for p in self.parameters()), "embedding": embedding}
