"""Megalodon's attention sub-layer: pre-norm, CEMA, normalized attention (paper §3.3), chunked as Mega-chunk."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mega.activations import identity
from mega.attention import RecomputedAttention, causal_mask, split_chunks
from mega.dropout import Dropout
from mega.megalodon.cema import ComplexEMA
from mega.megalodon.config import MegalodonConfig
from mega.megalodon.rope import RotaryEmbedding
from mega.megalodon.timestep_norm import SequenceGroupNorm, TimestepNorm
from mega.norms import PlusOneRMSNorm
from mega.positional import SimpleRelativePositionalBias


def build_sequence_norm(config: MegalodonConfig) -> TimestepNorm | SequenceGroupNorm:
    """config.normalization_type: 'timestepnorm' (causal statistics) or 'groupnorm' (whole sequence)."""
    kind = TimestepNorm if config.normalization_type == "timestepnorm" else SequenceGroupNorm
    return kind(config.hidden_size, config.norm_num_groups, config.norm_affine, config.norm_eps)


def apply_sequence_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The normalised x of either norm (a timestep norm also returns its running statistics: not needed here)."""
    return norm(x, mask)[0] if isinstance(norm, TimestepNorm) else norm(x, mask)


class NormalizedAttention(nn.Module):
    """X' = CEMA(X̃), X̃ = Norm(X);  Z' = Z/‖Z‖, Z = X'W_z + b_z;  Q = κ_q ⊙ Z' + µ_q, K = κ_k ⊙ Z' + µ_k;
    V = SiLU(X̃W_v + b_v);  O = softmax(QKᵀ)V;  r = SiLU(X'W_r + b_r);  Ŷ = X + SiLU(X'W_h + (r ⊙ O)U_h + b_h).

    Eq. 5–9 of the paper with MEGA's eq. 16, 18 and 20 (no update gate, no 1/τ scale); κ = 1 + κ̃ (plus-one,
    κ̃ = 0 at start). Attention runs within chunks of chunk_size (any length: the last chunk is padded), over
    num_attention_heads heads, with RoPE (positions from each chunk's start) or MEGA's simple relative bias.
    """

    def __init__(self, config: MegalodonConfig) -> None:
        super().__init__()
        self.config = config
        dim, zdim, vdim = config.hidden_size, config.shared_representation_size, config.intermediate_size
        self.dim, self.zdim, self.vdim, self.heads = dim, zdim, vdim, config.num_attention_heads
        self.chunk_size = config.chunk_size
        self.causal = config.is_decoder
        self.norm = build_sequence_norm(config)
        self.cema = ComplexEMA(
            dim,
            config.ema_projection_size,
            config.bidirectional,
            config.truncation,
            config.cema_input_phase,
            config.cema_input_expansion,
            config.cema_base_angle,
            config.cema_skip,
        )
        self.cema_norm = PlusOneRMSNorm(dim, eps=config.norm_eps) if config.cema_output_norm else None
        self.v_proj = nn.Linear(dim, vdim)
        self.mx_proj = nn.Linear(dim, zdim + vdim + dim)  # rows: Z, reset gate r, X'W_h
        self.h_proj = nn.Linear(vdim, dim, bias=False)  # U_h (b_h is mx_proj's)
        self.qk_scale = nn.Parameter(torch.zeros(2, zdim))  # κ̃_q, κ̃_k: κ = 1 + κ̃
        self.qk_offset = nn.Parameter(torch.zeros(2, zdim))  # µ_q, µ_k
        head_dim = zdim // self.heads
        if config.positional_encoding == "rope":
            self.rope, self.rel_pos = RotaryEmbedding(head_dim, config.rope_base), None
        else:
            self.rope, self.rel_pos = None, SimpleRelativePositionalBias(config.attention_span)
        self.candidate_activation = F.silu if config.candidate_activation == "silu" else identity
        self.dropout = Dropout(config.dropout_prob)
        self.hidden_dropout = Dropout(config.hidden_dropout_prob)
        self.attention_dropout = config.attention_probs_dropout_prob

    def reset_parameters(self) -> None:
        c = self.config
        self.cema.reset_parameters()
        for linear in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(linear.weight, std=c.initializer_range)
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.qk_scale)
        nn.init.zeros_(self.qk_offset)
        if self.rel_pos is not None:
            self.rel_pos.reset_parameters(c.initializer_range)

    def normalize_shared(self, shared: torch.Tensor) -> torch.Tensor:
        """Z' = Z / ‖Z‖ over z (eq. 6); 'rms_per_head' (code): each head's slice over its RMS, times 1/√(z/H)."""
        eps = self.config.norm_eps
        if self.config.shared_normalization == "l2":
            return shared * torch.rsqrt(shared.square().sum(-1, keepdim=True) + eps)
        heads = shared.unflatten(-1, (self.heads, -1))
        heads = heads * torch.rsqrt(heads.square().mean(-1, keepdim=True) + eps) / math.sqrt(heads.size(-1))
        return heads.flatten(-2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D]; mask: [B, L] bool, True = real (None = no padding) → Ŷ [B, L, D]."""
        residual = x
        x = apply_sequence_norm(self.norm, x, mask)  # X̃
        value = F.silu(self.v_proj(x))  # V  (MEGA eq. 16)
        contextual = self.cema(x, mask)  # X'  (eq. 5)
        if self.cema_norm is not None:
            contextual = self.cema_norm(contextual)
        contextual = self.hidden_dropout(contextual)
        shared, reset, candidate = self.mx_proj(contextual).split([self.zdim, self.vdim, self.dim], dim=-1)
        shared = self.normalize_shared(shared)  # Z'  (eq. 6)
        query = torch.addcmul(self.qk_offset[0], shared, self.qk_scale[0] + 1.0)  # eq. 7
        key = torch.addcmul(self.qk_offset[1], shared, self.qk_scale[1] + 1.0)  # eq. 8
        attended = self.attend(query, key, value, mask)  # O  (eq. 9)
        gated = self.hidden_dropout(F.silu(reset) * attended)  # r ⊙ O  (MEGA eq. 18)
        out = self.candidate_activation(candidate + self.h_proj(gated))  # Ĥ  (MEGA eq. 20)
        return residual + self.dropout(out)  # eq. 11, first line

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """softmax(QKᵀ + bias) V within chunks, per head: [B, L, z], [B, L, z], [B, L, v] → [B, L, v]."""
        batch, seq_len, _ = query.shape
        chunk_len, key_mask, chunks = split_chunks(mask, self.chunk_size, query, key, value)
        # [B, K, C, H·w] → [B, K, H, C, w]
        query, key, value = (t.unflatten(-1, (self.heads, -1)).transpose(2, 3) for t in chunks)
        if self.rope is not None:
            query, key = self.rope(query), self.rope(key)
            bias = query.new_zeros(chunk_len, chunk_len)
        else:
            bias = self.rel_pos(chunk_len)
        out = RecomputedAttention.apply(  # [B, K, H, C, v/H]
            query,
            key,
            value,
            bias,
            None if key_mask is None else key_mask.unsqueeze(2),  # [B, K, 1, C]: the same for every head
            causal_mask(chunk_len, query.device) if self.causal else None,
            "softmax",
            self.attention_dropout if self.training else 0.0,
        )
        return out.transpose(2, 3).reshape(batch, -1, self.vdim)[:, :seq_len]
