"""Input embeddings: token ids (+ optional token types) or real-valued scalars (pixels, audio samples)."""

from __future__ import annotations

import torch
from torch import nn

from mega.config import MegaConfig


class TokenEmbedding(nn.Module):
    """e = E[token] (+ T[token_type]); no scaling, no absolute positions."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_types = (
            nn.Embedding(config.type_vocab_size, config.hidden_size)
            if config.add_token_type_embeddings
            else None
        )
        self.init_std = config.hidden_size**-0.5
        self.type_init_std = config.initializer_range

    def reset_parameters(self) -> None:
        # reference: N(0, D^-1/2) over every row, the padding row included (the mask zeroes padded positions)
        nn.init.normal_(self.tokens.weight, std=self.init_std)
        if self.token_types is not None:
            nn.init.normal_(self.token_types.weight, std=self.type_init_std)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.is_floating_point():
            raise ValueError(
                f"input_kind='tokens' needs integer token ids, got a {input_ids.dtype} tensor: "
                "for pixels or audio samples set input_kind='real'"
            )
        _check_range("token id", input_ids, self.vocab_size, "vocab_size")
        embedded = self.tokens(input_ids)
        if token_type_ids is not None:
            if self.token_types is None:
                raise ValueError(
                    "token_type_ids were given but add_token_type_embeddings=False: "
                    "set add_token_type_embeddings=True or do not pass token_type_ids"
                )
            _check_range("token type id", token_type_ids, self.token_types.num_embeddings, "type_vocab_size")
            embedded = embedded + self.token_types(token_type_ids)
        elif self.token_types is not None:
            embedded = embedded + self.token_types.weight[0]  # type 0 everywhere (as HF)
        return embedded


class RealNumberEmbedding(nn.Module):
    """e = x · w + b for each scalar input (an affine Linear(1 → D))."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.hidden_size))
        self.bias = nn.Parameter(torch.empty(config.hidden_size))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=1.0)
        nn.init.normal_(self.bias, std=0.1)

    def forward(self, inputs: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if token_type_ids is not None:
            raise ValueError("token_type_ids are only supported with input_kind='tokens'")
        if not inputs.is_floating_point():
            raise ValueError(
                f"input_kind='real' needs a float tensor [B, L], got {inputs.dtype}: "
                "for token ids set input_kind='tokens'"
            )
        return torch.addcmul(self.bias, inputs.unsqueeze(-1), self.weight)


def build_embedding(config: MegaConfig) -> nn.Module:
    return TokenEmbedding(config) if config.input_kind == "tokens" else RealNumberEmbedding(config)


def embed_or_given(
    embed: nn.Module,
    inputs: torch.Tensor,
    inputs_embeds: torch.Tensor | None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """embed(inputs), or the given embeddings [B, L, D] (checked against the inputs' shape) when there are some."""
    if inputs_embeds is None:
        return embed(inputs, token_type_ids)
    if inputs_embeds.shape[:2] != inputs.shape:
        raise ValueError(
            f"inputs_embeds of shape {tuple(inputs_embeds.shape)} do not match the input's "
            f"{tuple(inputs.shape)}: pass [batch, length, hidden_size]"
        )
    return inputs_embeds


def _check_range(what: str, ids: torch.Tensor, size: int, option: str) -> None:
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(
            f"{what} {bad} is outside [0, {option}={size}): set {option} > {max(high, 0)} "
            "(the data config's vocabulary size) or fix the inputs"
        )
