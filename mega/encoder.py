"""MEGA encoder: embedding → dropout → blocks → final norm (prenorm models) → [B, L, D] hidden states."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mega.cache import DecoderCache
from mega.checkpointing import checkpointing_active, run_layer
from mega.config import MegaConfig
from mega.dropout import Dropout
from mega.embeddings import build_embedding, embed_or_given
from mega.layer import MegaBlock
from mega.norms import build_norm


@dataclass
class EncoderOutput:
    """What MegaEncoder returns when asked for more than the last hidden states."""

    last_hidden_state: torch.Tensor  # [B, L, D]
    hidden_states: tuple[torch.Tensor, ...] | None = (
        None  # embeddings, then each layer's output (before final norm)
    )
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, K, C, C] (K chunks of C positions)
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # per layer [B, L, S] (add_cross_attention)


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
        self.final_norm = (
            build_norm(
                config.normalization_type,
                config.hidden_size,
                config.norm_affine,
                config.rmsnorm_discards_normalization,
            )
            if config.has_final_norm
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation (norms start at weight 1, bias 0 by construction)."""
        self.embed.reset_parameters()
        for layer in self.layers:
            layer.reset_parameters()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> torch.Tensor | EncoderOutput:
        """→ [B, L, D], or an EncoderOutput when output_hidden_states or output_attentions.

        inputs_embeds [B, L, D]: used instead of embedding input_ids (e.g. with masked positions replaced, for
        self-pretraining); input_ids still give the shape.
        cache: continue a causal sequence (is_decoder=True), see mega.cache. encoder_hidden_states [B, S, D] and
        encoder_attention_mask [B, S] (1/True = real): what the cross-attention reads (add_cross_attention=True).
        """
        if input_ids.dim() != 2:
            raise ValueError(
                f"MegaEncoder expects input of shape [batch, length], got {tuple(input_ids.shape)}"
            )
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {tuple(attention_mask.shape)} differs from the input's "
                    f"{tuple(input_ids.shape)}"
                )
            mask = attention_mask.bool()
            if bool(mask.all()):
                mask = None  # nothing padded (reference): skip the masking work
        x = self.embed_dropout(embed_or_given(self.embed, input_ids, inputs_embeds, token_type_ids))
        keep = mask.unsqueeze(-1).to(x.dtype) if mask is not None and self.config.mask_padded_states else None
        if keep is not None:
            x = x * keep
        if encoder_hidden_states is not None and not self.config.add_cross_attention:
            raise ValueError(
                "encoder_hidden_states were given but add_cross_attention=False: set "
                "add_cross_attention=True (and is_decoder=True) to attend to an encoder's states"
            )
        checkpointed = checkpointing_active(self.config.activation_checkpointing, self)
        if checkpointed and cache is not None:
            raise ValueError(
                "activation_checkpointing=True reruns each layer in the backward, which would advance the "
                "incremental-decoding cache twice: decode under torch.no_grad() (generate does) or in eval mode, "
                "or set activation_checkpointing=False"
            )
        hidden_states = [x] if output_hidden_states else None
        attentions, cross_attentions = [], []
        for index, layer in enumerate(self.layers):
            out = run_layer(
                layer,
                checkpointed,
                x,
                mask,
                encoder_hidden_states,
                encoder_attention_mask,
                None if cache is None else cache.layer(index),
                need_weights=output_attentions,
            )
            if output_attentions:
                x, weights, cross_weights = out
                attentions.append(weights)
                cross_attentions.append(cross_weights)
            else:
                x = out
            if output_hidden_states:
                hidden_states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if keep is not None:
            x = x * keep
        if not (output_hidden_states or output_attentions):
            return x
        return EncoderOutput(
            x,
            tuple(hidden_states) if output_hidden_states else None,
            tuple(attentions) if output_attentions else None,
            tuple(cross_attentions) if output_attentions and self.config.add_cross_attention else None,
        )

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.embed.parameters())
