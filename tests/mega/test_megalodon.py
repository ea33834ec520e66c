"""The Megalodon layer and classifier: equations, two-hop residual, causality, padding, gradients, options."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mega.megalodon.attention as megalodon_attention
from mega.attention import attention_weights
from mega.megalodon import CODE_VARIANT, MegalodonConfig, MegalodonEncoder, MegalodonForSequenceClassification
from mega.megalodon.attention import NormalizedAttention
from mega.megalodon.block import MegalodonBlock
from mega.megalodon.rope import RotaryEmbedding

SMALL = dict(
    vocab_size=11,
    hidden_size=12,
    num_hidden_layers=2,
    shared_representation_size=8,
    intermediate_size=10,
    nffn_hidden_size=14,
    ema_projection_size=3,
    norm_num_groups=3,
    normalization_type="groupnorm",
    dropout_prob=0.0,
    num_labels=4,
)


def config(**options) -> MegalodonConfig:
    return MegalodonConfig(**{**SMALL, **options})


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Initialise, then move the zero-initialised scales and offsets (κ̃, µ, norms' γ and β, η) off zero."""
    torch.manual_seed(1)
    if hasattr(module, "reset_parameters"):  # sub-layers; the encoder and classifier initialise themselves
        module.reset_parameters()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("qk_scale", "qk_offset", "norm.weight", "norm.bias", "eta", "v_proj.bias")):
                p.normal_(std=0.5)
    return module


def rotate(x: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE with an explicit 2×2 rotation of each feature pair (i, i + w/2) at each position: x [L, w]."""
    half = x.size(-1) // 2
    out = x.clone()
    for t in range(x.size(0)):
        for i in range(half):
            angle = t * base ** (-i / half)
            c, s = math.cos(angle), math.sin(angle)
            out[t, i] = c * x[t, i] - s * x[t, i + half]
            out[t, i + half] = s * x[t, i] + c * x[t, i + half]
    return out


def test_normalized_attention_follows_the_equations():
    layer = randomize(NormalizedAttention(config()).double()).eval()
    x = torch.randn(1, 7, 12, dtype=torch.float64)
    z, v = 8, 10
    tilde = layer.norm(x)  # X̃ = GroupNorm(X)
    contextual = layer.cema(tilde)  # X' = CEMA(X̃)
    w_z, w_r, w_h = layer.mx_proj.weight.split([z, v, 12])
    b_z, b_r, b_h = layer.mx_proj.bias.split([z, v, 12])
    shared = contextual @ w_z.T + b_z
    normalized = shared / shared.norm(dim=-1, keepdim=True)  # Z' = Z / ‖Z‖  (eq. 6)
    query = (layer.qk_scale[0] + 1) * normalized + layer.qk_offset[0]  # eq. 7
    key = (layer.qk_scale[1] + 1) * normalized + layer.qk_offset[1]  # eq. 8
    value = F.silu(tilde @ layer.v_proj.weight.T + layer.v_proj.bias)
    query, key = rotate(query[0], 10000.0), rotate(key[0], 10000.0)
    attended = torch.softmax(query @ key.T, dim=-1) @ value[0]  # eq. 9: no 1/τ
    reset = F.silu(contextual[0] @ w_r.T + b_r)
    candidate = F.silu(contextual[0] @ w_h.T + b_h + (reset * attended) @ layer.h_proj.weight.T)
    torch.testing.assert_close(layer(x)[0], x[0] + candidate, atol=1e-6, rtol=1e-6)


def test_rope_scores_depend_on_the_relative_position_only():
    rope = RotaryEmbedding(6)
    q, k = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    queries, keys = rope(q.expand(9, 6)), rope(k.expand(9, 6))
    scores = queries @ keys.T
    for offset in (0, 2, -3):
        torch.testing.assert_close(
            scores.diagonal(offset), scores.diagonal(offset)[:1].expand(9 - abs(offset))
        )


def test_per_head_rms_normalization_is_the_l2_normalization_of_each_head():
    heads = NormalizedAttention(config(num_attention_heads=2, shared_normalization="rms_per_head")).double()
    z = torch.randn(3, 5, 8, dtype=torch.float64)
    per_head = z.unflatten(-1, (2, 4))
    expected = (per_head / per_head.norm(dim=-1, keepdim=True)).flatten(-2)
    torch.testing.assert_close(heads.normalize_shared(z), expected, atol=1e-4, rtol=1e-4)  # eps differs


def test_the_ffn_residual_is_the_block_input():
    block = randomize(MegalodonBlock(config()).double()).eval()
    with torch.no_grad():
        block.ffn.fc2.weight.zero_()
        block.ffn.fc2.bias.zero_()
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    assert not torch.allclose(block.attn(x), x)  # the attention output Ŷ only feeds the FFN
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("variant", [{}, CODE_VARIANT], ids=["paper", "code"])
@pytest.mark.parametrize("chunk_size", [-1, 4])
def test_causal_variants_see_no_future_positions(variant, chunk_size):
    torch.manual_seed(0)
    options = dict(
        is_decoder=True, bidirectional=False, normalization_type="timestepnorm", chunk_size=chunk_size
    )
    encoder = randomize(MegalodonEncoder(config(**options, **variant)).double()).eval()
    tokens = torch.randint(1, 11, (2, 13))
    later = tokens.clone()
    later[:, 6:] = (later[:, 6:] % 10) + 1  # every later token changed
    before, after = encoder(tokens), encoder(later)
    torch.testing.assert_close(after[:, :6], before[:, :6])
    assert (after[:, 6:] - before[:, 6:]).abs().max() > 1e-3


@pytest.mark.parametrize("chunk_size", [-1, 4])
@pytest.mark.parametrize("norm", ["groupnorm", "timestepnorm"])
def test_padding_changes_nothing_at_real_positions(chunk_size, norm):
    encoder = randomize(
        MegalodonEncoder(config(chunk_size=chunk_size, normalization_type=norm)).double()
    ).eval()
    tokens = torch.randint(1, 11, (1, 9))
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = padded != 0
    torch.testing.assert_close(encoder(padded, mask)[:, :9], encoder(tokens))
    assert torch.equal(encoder(padded, mask)[:, 9:], torch.zeros(1, 4, 12, dtype=torch.float64))


def plain_attention(query, key, value, bias, key_mask, causal, function, dropout_p, store=False):
    """The attention with autograd through every step (no recomputation, no hand-written backward)."""
    return attention_weights(query, key, bias, key_mask, causal, function) @ value


@pytest.mark.parametrize("positional_encoding", ["rope", "simple"])
def test_gradients_equal_plain_autograd(monkeypatch, positional_encoding):
    options = dict(num_attention_heads=2, chunk_size=4, positional_encoding=positional_encoding)
    net = randomize(MegalodonForSequenceClassification(config(**options)).double()).eval()
    tokens = torch.randint(1, 11, (3, 10))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    mask[2, 3:] = False

    def gradients():
        net.zero_grad()
        net(tokens, mask).square().sum().backward()
        return {name: p.grad.clone() for name, p in net.named_parameters()}

    fast = gradients()
    monkeypatch.setattr(megalodon_attention.RecomputedAttention, "apply", plain_attention)
    plain = gradients()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-8, atol=1e-10, msg=name)


def test_any_length_with_chunks():
    net = MegalodonForSequenceClassification(config(chunk_size=4))
    for length in (1, 3, 4, 9, 16):
        assert net(torch.randint(1, 11, (2, length))).shape == (2, 4)


def test_classifier_inputs_and_counts():
    net = MegalodonForSequenceClassification(config(dual_encoder=True, pair_combine="nli"))
    docs = torch.randint(1, 11, (2, 7))
    assert net(docs, input2=docs.flip(1)).shape == (2, 4)
    counts = net.param_counts()
    assert counts["embedding"] == 11 * 12 and counts["total"] == sum(p.numel() for p in net.parameters())
    real = MegalodonForSequenceClassification(config(input_kind="real", vocab_size=1, pad_token_id=None))
    assert real(torch.randn(2, 9)).shape == (2, 4) and real.param_counts()["embedding"] == 2 * 12


def test_code_variant_changes_the_parameters():
    paper = dict(MegalodonForSequenceClassification(config()).named_parameters())
    code = dict(MegalodonForSequenceClassification(config(**CODE_VARIANT)).named_parameters())
    cema = "encoder.layers.0.attn.cema."
    assert f"{cema}beta" in paper and f"{cema}beta" not in code
    assert f"{cema}omega" in code and "encoder.layers.0.attn.cema_norm.weight" in code
    assert paper[f"{cema}eta"].shape == (2 * 12, 3, 2)  # bidirectional: 2d rows of complex η


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(norm_num_groups=5), "set norm_num_groups to a divisor of 12"),
        (dict(num_attention_heads=3), "not divisible by num_attention_heads=3"),
        (dict(shared_representation_size=6, num_attention_heads=2), "must be even"),
        (dict(is_decoder=True), "needs bidirectional=False"),
        (dict(normalization_type="layernorm"), "allowed values: timestepnorm, groupnorm"),
        (dict(cema_base_angle="tanh"), "MegalodonConfig.cema_base_angle"),
        (dict(dropout_prob=1.0), "must be in \\[0, 1\\)"),
    ],
)
def test_bad_options_name_the_fix(options, message):
    with pytest.raises(ValueError, match=message):
        config(**options)
