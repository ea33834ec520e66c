"""Megalodon encoder: embedding → dropout → Megalodon layers → final norm (pre-norm models end with one)."""

from __future__ import annotations

import torch
from torch import nn

from mega.checkpointing import run_layer
from mega.dropout import Dropout
from mega.embeddings import build_embedding, embed_or_given
from mega.megalodon.attention import apply_sequence_norm, build_sequence_norm
from mega.megalodon.block import MegalodonBlock
from mega.megalodon.config import MegalodonConfig


class MegalodonEncoder(nn.Module):
    """encoder(input, mask=None) → hidden states [B, L, D].

    input: [B, L] token ids (input_kind='tokens') or floats (input_kind='real'); mask: [B, L], True = real
    position (the model never infers padding from ids). Padded positions are zeroed after the embedding and
    at the output, and take no part in the CEMA, the norms' statistics or the attention.
    """

    def __init__(self, config: MegalodonConfig | None = None, **options) -> None:
        super().__init__()
        config = config if config is not None else MegalodonConfig(**options)
        self.config = config
        self.embed = build_embedding(config)
        self.embed_dropout = Dropout(config.dropout_prob)
        self.layers = nn.ModuleList(MegalodonBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = build_sequence_norm(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def forward(
        self,
        input: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """inputs_embeds [B, L, D]: used instead of embedding `input` (which still gives the shape)."""
        if input.dim() != 2:
            raise ValueError(
                f"MegalodonEncoder expects input of shape [batch, length], got {tuple(input.shape)}"
            )
        if mask is not None:
            if mask.shape != input.shape:
                raise ValueError(
                    f"mask shape {tuple(mask.shape)} differs from the input's {tuple(input.shape)}"
                )
            mask = None if bool(mask.all()) else mask.bool()
        keep = None if mask is None else mask.unsqueeze(-1)
        x = self.embed_dropout(embed_or_given(self.embed, input, inputs_embeds))
        if keep is not None:
            x = x * keep
        for layer in self.layers:
            x = run_layer(layer, self.config.activation_checkpointing, x, mask)
        x = apply_sequence_norm(self.final_norm, x, mask)
        return x if keep is None else x * keep

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.embed.parameters())
