"""Transformer baseline: the block equals PyTorch's pre-LN encoder layer, padding does not leak, sizes add up."""

import pytest
import torch
from torch import nn

from mega.transformer import TransformerBlock, TransformerConfig, TransformerForSequenceClassification


def test_block_matches_torch_pre_ln_encoder_layer():
    torch.manual_seed(0)
    config = TransformerConfig(
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    ours = TransformerBlock(config).eval()
    reference = nn.TransformerEncoderLayer(
        32,
        4,
        64,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
        layer_norm_eps=config.layer_norm_eps,
    ).eval()
    with torch.no_grad():
        ours.attn.qkv.weight.copy_(reference.self_attn.in_proj_weight)
        ours.attn.qkv.bias.copy_(reference.self_attn.in_proj_bias)
        ours.attn.out.load_state_dict(reference.self_attn.out_proj.state_dict())
        ours.fc1.load_state_dict(reference.linear1.state_dict())
        ours.fc2.load_state_dict(reference.linear2.state_dict())
        ours.attn_norm.load_state_dict(reference.norm1.state_dict())
        ours.ffn_norm.load_state_dict(reference.norm2.state_dict())
    x = torch.randn(3, 10, 32)
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[1, 6:] = False
    expected = reference(x, src_key_padding_mask=~keep)
    torch.testing.assert_close(ours(x, keep)[keep], expected[keep], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "pooling,input_kind", [("cls", "tokens"), ("mean", "tokens"), ("cls", "real"), ("mean", "real")]
)
def test_padding_does_not_change_logits(pooling, input_kind):
    torch.manual_seed(0)
    net = TransformerForSequenceClassification(
        vocab_size=30,
        num_labels=3,
        pooling=pooling,
        input_kind=input_kind,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        num_hidden_layers=2,
        max_positions=12,
    ).eval()
    short = torch.randint(1, 30, (1, 7)) if input_kind == "tokens" else torch.randn(1, 7)
    padded = torch.cat([short, torch.zeros(1, 5, dtype=short.dtype)], dim=1)
    mask = torch.arange(12).unsqueeze(0) < 7
    torch.testing.assert_close(net(padded, mask), net(short), atol=1e-5, rtol=1e-5)


def test_param_counts_add_up():
    d, a, f, v, c, layers, length = 16, 8, 24, 11, 5, 3, 9
    net = TransformerForSequenceClassification(
        vocab_size=v,
        num_labels=c,
        hidden_size=d,
        attention_size=a,
        num_attention_heads=2,
        intermediate_size=f,
        num_hidden_layers=layers,
        position_embedding="learned",
        max_positions=length,
        pooling="cls",
    )
    block = 2 * 2 * d + (3 * d * a + 3 * a) + (a * d + d) + (d * f + f) + (f * d + d)
    expected = v * d + d + (length + 1) * d + layers * block + 2 * d + (d * f + f) + f * c
    assert net.param_counts() == {"total": expected, "embedding": v * d}


def test_dual_encoder_and_errors():
    net = TransformerForSequenceClassification(
        vocab_size=10, dual_encoder=True, pair_combine="nli", max_positions=6
    )
    logits = net(torch.randint(1, 10, (2, 6)), None, input2=torch.randint(1, 10, (2, 4)))
    assert logits.shape == (2, 2)
    with pytest.raises(ValueError, match="max_positions=6"):
        net(torch.randint(1, 10, (2, 9)), None, input2=torch.randint(1, 10, (2, 4)))
    with pytest.raises(ValueError, match="position_embedding"):
        TransformerConfig(position_embedding="rotary")
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(hidden_size=10, num_attention_heads=3)


@pytest.mark.parametrize("padded", [False, True])
def test_is_decoder_attends_only_to_earlier_positions(padded):
    torch.manual_seed(0)
    net = TransformerForSequenceClassification(
        vocab_size=20,
        hidden_size=16,
        num_attention_heads=2,
        is_decoder=True,
        dropout_prob=0.0,
        pooling="mean",
    ).eval()
    x = torch.randint(1, 20, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    if padded:
        mask[1, 7:] = False
    later = x.clone()
    later[:, 5:] = torch.randint(1, 20, (2, 5))
    before, after = net.encoder(x, mask), net.encoder(later, mask)
    assert torch.allclose(before[:, :5], after[:, :5], atol=1e-6)
    assert not torch.allclose(before[:, 5:], after[:, 5:])
