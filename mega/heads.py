"""Pooling, the official classifier head, pair combination, and a classifier around any [B, L, D] encoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mega.dropout import Dropout


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """[B, L, D] → [B, D] over real positions: 'mean', 'cls' (position 0) or 'last' (last real position)."""
    if kind == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(1) if kind == "mean" else hidden[:, -1]
    mask = mask.bool()
    if kind == "mean":
        counts = mask.sum(1, keepdim=True).clamp(min=1).to(hidden.dtype)
        return torch.einsum("bld,bl->bd", hidden, mask.to(hidden.dtype)) / counts
    if kind == "last":
        positions = torch.arange(mask.size(1), device=mask.device)
        last = torch.where(mask, positions, -1).amax(1).clamp(min=0)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    raise ValueError(f"unknown pooling {kind!r}; allowed: mean, cls, last")


def combine_pair(first: torch.Tensor, second: torch.Tensor, kind: str) -> torch.Tensor:
    """Two pooled documents → features: 'concat' [second, first] (official order: doc from src1, then src),
    or 'nli' [u, v, u·v, u − v]."""
    if kind == "concat":
        return torch.cat([second, first], dim=-1)
    if kind == "nli":
        return torch.cat([first, second, first * second, first - second], dim=-1)
    raise ValueError(f"unknown pair_combine {kind!r}; allowed: concat, nli")


def pair_width(dim: int, kind: str) -> int:
    return {"concat": 2 * dim, "nli": 4 * dim}[kind]


def resolve_config(config_class: type, config: Any, options: dict[str, Any]) -> Any:
    """`config`, or `config_class(**options)` when it is None; both at once is an error."""
    if config is None:
        return config_class(**options)
    if options:
        raise ValueError(
            f"pass either a {config_class.__name__} or options, not both (got options {sorted(options)})"
        )
    return config


def head_arguments(config: Any) -> dict[str, Any]:
    """SequenceClassifier's head options from a model config (every family uses these field names)."""
    return dict(
        dim=config.hidden_size,
        head_hidden=config.intermediate_size,
        num_labels=config.num_labels,
        pooling=config.pooling,
        dual_encoder=config.dual_encoder,
        pair_combine=config.pair_combine,
        dropout=config.head_dropout,
    )


class ClassifierHead(nn.Module):
    """logits = W₂ GELU(Dropout(W₁ x + b₁)), W₂ without bias (official LRA head)."""

    def __init__(self, in_dim: int, hidden_dim: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden_dim)
        self.dropout = Dropout(dropout)
        self.out = nn.Linear(hidden_dim, num_labels, bias=False)
        nn.init.xavier_uniform_(self.dense.weight)
        nn.init.zeros_(self.dense.bias)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.dropout(self.dense(features))))


class SequenceClassifier(nn.Module):
    """Encoder [B, L, D] → pooling over real positions → (pair combination) → classifier head.

    encoder(input, mask) must return [B, L, D]; with dual_encoder=True the same encoder reads both documents.
    """

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        head_hidden: int,
        num_labels: int,
        pooling: str = "mean",
        dual_encoder: bool = False,
        pair_combine: str = "concat",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.dual_encoder = dual_encoder
        self.pair_combine = pair_combine
        in_dim = pair_width(dim, pair_combine) if dual_encoder else dim
        self.head = ClassifierHead(in_dim, head_hidden, num_labels, dropout)

    def encode(self, input: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return pool(self.encoder(input, mask), mask, self.pooling)

    def forward(
        self,
        input: torch.Tensor,
        mask: torch.Tensor | None = None,
        input2: torch.Tensor | None = None,
        mask2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """→ logits [B, num_labels]."""
        features = self.encode(input, mask)
        if self.dual_encoder:
            if input2 is None:
                raise ValueError("dual_encoder=True needs the second document: pass input2 (and mask2)")
            features = combine_pair(features, self.encode(input2, mask2), self.pair_combine)
        elif input2 is not None:
            raise ValueError(
                "input2 was given but dual_encoder=False: set dual_encoder=True for two documents"
            )
        return self.head(features)

    def param_counts(self) -> dict[str, int]:
        embedding = self.encoder.embedding_parameters()
        return {"total": sum(p.numel() for p in self.parameters()), "embedding": embedding}
