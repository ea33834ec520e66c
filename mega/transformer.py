"""Transformer baseline: the LRA paper's encoder (pre-LayerNorm blocks, multi-head softmax attention through
PyTorch's scaled_dot_product_attention, learned or sinusoidal absolute positions) with MEGA's embeddings, pooling
and classifier head, so that every task runs with either model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mega.checkpointing import run_layer
from mega.config import INPUT_KINDS, PAIR_COMBINES, POOLINGS, check_option_types
from mega.embeddings import build_embedding, embed_or_given
from mega.heads import SequenceClassifier, head_arguments, resolve_config

POSITION_EMBEDDINGS = ("sinusoidal", "learned")


@dataclass
class TransformerConfig:
    """Flat options (Contract 2). The defaults are the LRA Retrieval baseline (emb 128, 4 heads, 4 layers, FFN 512)."""

    vocab_size: int = 257
    input_kind: str = "tokens"  # "tokens" (ids) or "real" (pixels, audio samples)
    pad_token_id: int | None = 0
    num_labels: int = 2
    hidden_size: int = 128  # emb_dim
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    attention_size: int | None = None  # qkv_dim over all heads (None: hidden_size)
    intermediate_size: int = 512  # mlp_dim: FFN width, also the classifier's hidden width
    dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None  # None: dropout_prob
    position_embedding: str = "sinusoidal"
    max_positions: int = 4096
    pooling: str = "cls"  # 'cls' prepends a learned <CLS> vector and reads its final state
    dual_encoder: bool = False
    pair_combine: str = "concat"
    is_decoder: bool = (
        False  # causal attention: position t attends to positions <= t (causal self-pretraining)
    )
    layer_norm_eps: float = 1e-6
    # read by mega.embeddings.TokenEmbedding (no token types in LRA)
    add_token_type_embeddings: bool = False
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    activation_checkpointing: bool = False  # training reruns each block in the backward (mega.checkpointing)

    def __post_init__(self) -> None:
        check_option_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.attention_size is None:
            self.attention_size = self.hidden_size
        for option, value, allowed in (
            ("input_kind", self.input_kind, INPUT_KINDS),
            ("pooling", self.pooling, POOLINGS),
            ("pair_combine", self.pair_combine, PAIR_COMBINES),
            ("position_embedding", self.position_embedding, POSITION_EMBEDDINGS),
        ):
            if value not in allowed:
                raise ValueError(
                    f"TransformerConfig.{option}={value!r} is not supported; allowed: {', '.join(allowed)}"
                )
        if self.attention_size % self.num_attention_heads:
            raise ValueError(
                f"attention_size={self.attention_size} must be divisible by num_attention_heads="
                f"{self.num_attention_heads}"
            )

    @property
    def head_dropout(self) -> float:
        return self.dropout_prob if self.classifier_dropout is None else self.classifier_dropout


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[length, dim]: PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(t / 10000^(2i/dim))."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


class SelfAttention(nn.Module):
    """softmax(Q Kᵀ / √d_head + mask) V per head, then an output projection back to hidden_size."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.causal = config.is_decoder
        self.heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.attention_size)
        self.out = nn.Linear(config.attention_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (
            self.qkv(x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        )  # 3 × [B, H, L, d]
        attn_mask = None if keep is None else keep[:, None, None, :]  # True = key takes part
        if self.causal and attn_mask is not None:  # SDPA takes a mask or is_causal, not both
            attn_mask = attn_mask & torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and attn_mask is None,
        )
        return self.out(y.transpose(1, 2).reshape(batch, length, -1))


class TransformerBlock(nn.Module):
    """x ← x + Dropout(Attn(LN(x))); x ← x + Dropout(W₂ Dropout(GELU(W₁ LN(x))))  (pre-LN, as LRA)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = SelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout_prob)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), keep))
        hidden = self.dropout(F.gelu(self.fc1(self.ffn_norm(x))))
        return x + self.dropout(self.fc2(hidden))


class TransformerEncoder(nn.Module):
    """encoder(input, mask=None) → [B, L, D] (L + 1 with pooling='cls': the <CLS> state comes first).

    is_decoder=True makes every position attend only to itself and earlier positions (the <CLS> state first)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = build_embedding(config)
        self.cls = nn.Parameter(torch.zeros(config.hidden_size)) if config.pooling == "cls" else None
        positions = config.max_positions + (self.cls is not None)
        if config.position_embedding == "learned":
            self.positions = nn.Parameter(torch.zeros(positions, config.hidden_size))
        else:
            self.register_buffer(
                "positions", sinusoidal_positions(positions, config.hidden_size), persistent=False
            )
        self.dropout = nn.Dropout(config.dropout_prob)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.embed.reset_parameters()
        if self.cls is not None:
            nn.init.normal_(self.cls, std=self.config.initializer_range)
        if isinstance(self.positions, nn.Parameter):
            nn.init.normal_(self.positions, std=self.config.initializer_range)
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

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
                f"TransformerEncoder expects input of shape [batch, length], got {tuple(input.shape)}"
            )
        x = embed_or_given(self.embed, input, inputs_embeds)
        keep = None if mask is None or bool(mask.all()) else mask.bool()
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.size(0), 1, -1), x], dim=1)
            keep = None if keep is None else F.pad(keep, (1, 0), value=True)
        if x.size(1) > self.positions.size(0):
            raise ValueError(
                f"sequence of {input.size(1)} positions exceeds max_positions={self.config.max_positions}: "
                "raise model.max_positions or shorten data.max_length"
            )
        x = self.dropout(x + self.positions[: x.size(1)])
        for layer in self.layers:
            x = run_layer(layer, self.config.activation_checkpointing, x, keep)
        return self.final_norm(x)

    def embedding_parameters(self) -> int:
        return sum(p.numel() for p in self.embed.parameters())


class TransformerForSequenceClassification(SequenceClassifier):
    """net = TransformerForSequenceClassification(**options); logits = net(input, mask, input2=None, mask2=None)."""

    config_class = TransformerConfig  # what its options are (train.py checks their types before building)

    def __init__(self, config: TransformerConfig | None = None, **options) -> None:
        config = resolve_config(TransformerConfig, config, options)
        super().__init__(TransformerEncoder(config), **head_arguments(config))
        self.config = config
