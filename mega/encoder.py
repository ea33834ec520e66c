"""MEGA encoder: embedding → dropout → blocks → final norm (prenorm models) → [B, L, D] hidden states."""

from __future__ import annotations

import torch
from torch import nn

from mega.config import MegaConfig
from mega.dropout import Dropout
from mega.embeddings import build_embedding
from mega.layer import MegaBlock
from mega.norms import build_norm


class MegaEncoder(nn.Module):
    """encoder(input_ids, attention_mask=None, token_type_ids=None) → last hidden states [B, L, D].

    input_ids: [B, L] token ids (input_kind='tokens') or floats (input_kind='real').
    attention_mask: [B, L], 1/True = real position (as HF); the model never infers padding from ids.
    """

    def __init__(self, config: MegaConfig | None = None, **options) -> None:
        super().__init__()
        config = config if config is not None else MegaConfig(**options)
        self.config = config
        self.embed = build_embedding(config)
        self.embed_dropout = Dropout(config.dropout_prob if config.embedding_dropout else 0.0)
        self.layers = nn.ModuleList(MegaBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = (build_norm(config.normalization_type, config.hidden_size, config.norm_affine,
                                      config.rmsnorm_discards_normalization)
                           if config.has_final_norm else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation (norms start at weight 1, bias 0 by construction)."""
        self.embed.reset_parameters()
        for layer in self.layers:
            layer.attn.reset_parameters()
            if layer.ffn is not None:
                layer.ffn.reset_parameters()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise ValueError(f"MegaEncoder expects input of shape [batch, length], got {tuple(input_ids.shape)}")
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} differs from the input's "
                                 f"{tuple(input_ids.shape)}")
            mask = attention_mask.bool()
            if bool(mask.all()):
                mask = None  # nothing padded (reference): skip the masking work
        x = self.embed_dropout(self.embed(input_ids, token_type_ids))
        keep = mask.unsqueeze(-1).to(x.dtype) if mask is not None and self.config.mask_padded_states else None
        if keep is not None:
            x = x * keep
        for layer in self.layers:
            x = layer(x, mask)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if keep is not None:
            x = x * keep
        return x

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.embed.parameters())
