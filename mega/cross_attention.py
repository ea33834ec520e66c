"""Gated cross-attention sub-layer of the MEGA decoder: target positions attend to the encoder's states."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega.activations import ACTIVATIONS
from mega.attention import attention_weights
from mega.cache import LayerCache
from mega.config import MegaConfig
from mega.dropout import Dropout
from mega.norms import build_norm
from mega.positional import build_relative_bias


class GatedCrossAttention(nn.Module):
    """[u | r | Q] = x̃ W_q;  K = M W_k;  V = act(M W_v);  H = act(U_h(f(QKᵀ + b) V ⊙ SiLU(r)));  y = x + σ(u) ⊙ (H − x).

    x: decoder states, M: encoder states. The relative bias b[i, j] uses the decoder position i and the encoder
    position j, over max_positions (no chunking: every target position sees the whole source).
    """

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.config = config
        dim, zdim = config.hidden_size, config.shared_representation_size
        self.dim, self.zdim = dim, zdim
        self.prenorm = config.normalize_before_mega
        self.function = config.attention_activation
        self.scaling = zdim**-0.5
        self.activation = ACTIVATIONS[config.activation]
        self.norm = build_norm(
            config.normalization_type, dim, config.norm_affine, config.rmsnorm_discards_normalization
        )
        self.k_proj = nn.Linear(dim, zdim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, 2 * dim + zdim)
        self.h_proj = nn.Linear(dim, dim)
        self.rel_pos = build_relative_bias(config, config.max_positions)
        self.dropout = Dropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = Dropout(config.hidden_dropout_prob, config.use_feature_dropout)
        self.attention_dropout = Dropout(config.attention_probs_dropout_prob)

    def reset_parameters(self) -> None:
        for linear in (self.k_proj, self.v_proj, self.q_proj, self.h_proj):
            nn.init.normal_(linear.weight, std=self.config.initializer_range)
            nn.init.zeros_(linear.bias)
        self.rel_pos.reset_parameters(self.config.initializer_range)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None,
        memory_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ):
        """x: [B, L, D]; memory: [B, S, D]; memory_mask: [B, S] bool, True = real (None = no padding).

        cache: x sits at positions cache.length…; the projected memory (and its mask) is stored on the first
        call and reused, so later calls may pass memory=None. need_weights: also return weights [B, L, S].
        """
        position = 0 if cache is None else cache.length
        if cache is not None and cache.cross_keys is not None:
            key, value, memory_mask = cache.cross_keys, cache.cross_values, cache.cross_mask
        else:
            if memory is None:
                raise ValueError(
                    "add_cross_attention=True: pass encoder_hidden_states [batch, source length, "
                    "hidden_size] (the states the decoder attends to)"
                )
            key, value = self.k_proj(memory), self.activation(self.v_proj(memory))
            memory_mask = None if memory_mask is None else memory_mask.bool()
            if cache is not None:
                cache.cross_keys, cache.cross_values, cache.cross_mask = key, value, memory_mask
        residual = x
        if self.prenorm:
            x = self.norm(x)
        gate_logits, reset, query = self.q_proj(x).split([self.dim, self.dim, self.zdim], dim=-1)
        target_len, source_len = x.size(1), key.size(1)
        bias = self.rel_pos(max(position + target_len, source_len), position)[:target_len, :source_len]
        if self.function == "softmax":
            query = query * self.scaling
        weights = attention_weights(
            query.unsqueeze(1),
            key.unsqueeze(1),
            bias,
            None if memory_mask is None else memory_mask.unsqueeze(1),
            None,
            self.function,
        ).squeeze(1)  # [B, L, S]
        attended = torch.bmm(self.attention_dropout(weights), self.hidden_dropout(value))
        out = self.dropout(self.activation(self.h_proj(attended * F.silu(reset))))
        out = torch.addcmul(residual, torch.sigmoid(gate_logits), out - residual)
        out = out if self.prenorm else self.norm(out)
        return (out, weights) if need_weights else out
