"""Native model: Mega-chunk for any length, masks, causality, pooling, heads, training step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mega import MegaConfig, MegaEncoder, MegaForSequenceClassification, pool

SMALL = dict(
    vocab_size=30,
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=20,
    max_positions=64,
    pad_token_id=0,
)


def encoder(**options) -> MegaEncoder:
    torch.manual_seed(0)
    return MegaEncoder(MegaConfig(**{**SMALL, **options})).eval()


def padded_batch(lengths: list[int], seq_len: int, vocab: int = 30, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), seq_len), generator=generator)
    mask = torch.arange(seq_len) < torch.tensor(lengths).unsqueeze(1)
    return ids, mask


@pytest.mark.parametrize("function", ["softmax", "laplace", "relu2"])
@pytest.mark.parametrize("bias", ["simple", "rotary"])
def test_chunk_any_length_equals_explicit_padding(function: str, bias: str):
    model = encoder(chunk_size=4, attention_activation=function, relative_positional_bias=bias)
    ids, mask = padded_batch([10, 7], 10)
    # explicit right padding to 12 = 3 chunks, as the reference encoder pads token inputs
    ids12 = torch.cat([ids, torch.zeros(2, 2, dtype=ids.dtype)], 1)
    mask12 = torch.cat([mask, torch.zeros(2, 2, dtype=torch.bool)], 1)
    with torch.no_grad():
        out = model(ids, mask)
        out12 = model(ids12, mask12)
    torch.testing.assert_close(out, out12[:, :10], rtol=1e-5, atol=1e-6)


def test_sequence_shorter_than_chunk_is_one_chunk():
    chunked, full = encoder(chunk_size=16), encoder(chunk_size=-1, max_positions=16)
    ids, mask = padded_batch([9, 5], 9)
    with torch.no_grad():
        torch.testing.assert_close(chunked(ids, mask), full(ids, mask))


@pytest.mark.parametrize("function", ["softmax", "laplace", "relu2"])
@pytest.mark.parametrize("chunk_size", [-1, 4])
def test_padding_does_not_leak_and_is_zeroed(function: str, chunk_size: int):
    model = encoder(attention_activation=function, chunk_size=chunk_size, normalization_type="layernorm")
    ids, mask = padded_batch([12, 6, 0], 12)  # the last row is all padding
    with torch.no_grad():
        out = model(ids, mask)
        other = model(torch.where(mask, ids, 7), mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, other)
    assert (out[~mask] == 0).all()


def test_causal_model_ignores_the_future():
    model = encoder(bidirectional=False, is_decoder=True, chunk_size=4)
    ids, _ = padded_batch([11], 11)
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] % 29) + 1
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_causal_softmax_with_left_padding_is_finite():
    model = encoder(bidirectional=False, is_decoder=True)
    ids, mask = padded_batch([5, 5], 8)
    mask = mask.flip(1)  # left padding: the first rows have no allowed key
    with torch.no_grad():
        assert torch.isfinite(model(ids, mask)).all()


def test_final_norm_follows_prenorm():
    assert encoder(normalize_before_mega=True, normalize_before_ffn=True).final_norm is not None
    assert encoder(normalize_before_mega=False, normalize_before_ffn=False).final_norm is None
    assert encoder(normalize_before_ffn=True, final_norm=False).final_norm is None


def test_pooling_over_real_positions():
    hidden = torch.arange(24, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(pool(hidden, mask, "mean")[1], hidden[1, :2].mean(0))
    torch.testing.assert_close(pool(hidden, mask, "last")[1], hidden[1, 1])
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])
    torch.testing.assert_close(pool(hidden, None, "last"), hidden[:, -1])


@pytest.mark.parametrize("combine,width", [("concat", 32), ("nli", 64)])
def test_dual_encoder(combine: str, width: int):
    net = MegaForSequenceClassification(**SMALL, dual_encoder=True, pair_combine=combine, num_labels=3).eval()
    assert net.head.dense.in_features == width
    ids, mask = padded_batch([9, 4], 9)
    ids2, mask2 = padded_batch([6, 6], 6, seed=1)
    with torch.no_grad():
        logits = net(ids, mask, input2=ids2, mask2=mask2)
        u, v = net.encode(ids, mask), net.encode(ids2, mask2)
    assert logits.shape == (2, 3)
    if combine == "concat":  # official order: [doc 2, doc 1]
        torch.testing.assert_close(logits, net.head(torch.cat([v, u], -1)))


def test_real_input_classifier_trains():
    torch.manual_seed(0)
    net = MegaForSequenceClassification(
        **{**SMALL, "vocab_size": 2},
        input_kind="real",
        num_labels=4,
        chunk_size=8,
        normalization_type="batchnorm",
        dropout_prob=0.1,
        use_feature_dropout=True,
    )
    x, labels = torch.randn(3, 20), torch.tensor([0, 1, 3])
    loss = torch.nn.functional.cross_entropy(net(x), labels)
    loss.backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert net.param_counts()["embedding"] == 2 * 16


def test_classifier_head_is_official():
    net = MegaForSequenceClassification(**SMALL, num_labels=5)
    assert net.head.dense.out_features == SMALL["intermediate_size"]
    assert net.head.out.bias is None


def test_mega_imports_neither_lightning_nor_hydra():
    code = (
        "import sys, mega; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', "
        "'pytorch_lightning', 'hydra', 'omegaconf')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
