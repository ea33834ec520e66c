"""The fused functions (RecomputedChain, ProloguedAttention) have the values and gradients of the plain expression,
keep less for the backward, and the MEGA sub-layers built on them compute what the plain expressions compute."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from experiments.saved_tensors import layer_parts, saved_bytes
from mega import MegaConfig, MegaEncoder
from mega.attention import MovingAverageGatedAttention, ProloguedAttention
from mega.dropout import Dropout, kept_fraction
from mega.ffn import NormalizedFeedForwardNetwork
from mega.fused import RecomputedChain, drop

SIZES = dict(
    hidden_size=6,
    shared_representation_size=4,
    intermediate_size=8,
    nffn_hidden_size=8,
    ema_projection_size=2,
    max_positions=16,
)


def mix(x, gate_in, hidden, keep, scale):
    return torch.addcmul(x, torch.sigmoid(gate_in), drop(F.silu(hidden), keep, scale) - x)


def gated(attended, reset_in):
    return attended * F.silu(reset_in)


def chain_cases(dtype: torch.dtype):
    """name -> (chain, sizes, weight, bias, inputs): each way the layers call RecomputedChain."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).requires_grad_()

    keep = torch.rand(2, 5, 6, generator=generator) > 0.3
    return {
        "element-wise, dropout": (
            mix,
            None,
            None,
            None,
            (randn(2, 5, 6), randn(2, 5, 6), randn(2, 5, 6), keep, 1.5),
        ),
        "element-wise, eval": (
            mix,
            None,
            None,
            None,
            (randn(2, 5, 6), randn(2, 5, 6), randn(2, 5, 6), None, 1.0),
        ),
        "linear, dropout": (
            lambda h, k, s: drop(F.silu(h), k, s),
            None,
            randn(3, 6),
            randn(3),
            (randn(2, 5, 6), keep, 1 / 0.7),
        ),
        "row blocks": (
            lambda h, k, s: drop(F.silu(h), k, s),
            [1, 3, 2],
            randn(6, 6),
            randn(6),
            (randn(2, 5, 6), keep, 2.0),
        ),
        "tensor bias": (gated, None, randn(3, 6), randn(2, 5, 3), (randn(2, 5, 6), randn(2, 5, 6))),
    }


def leaves(case) -> list[torch.Tensor]:
    _, _, weight, bias, inputs = case
    return [t for t in (weight, bias, *inputs) if isinstance(t, torch.Tensor) and t.requires_grad]


def outputs_and_grads(function, case) -> list[torch.Tensor]:
    chain, sizes, weight, bias, inputs = case
    out = function(chain, sizes, weight, bias, *inputs)
    outs = out if isinstance(out, tuple) else (out,)
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outs]
    return [*outs, *torch.autograd.grad(outs, leaves(case), grads)]


@pytest.mark.parametrize("name", chain_cases(torch.double))
def test_recomputed_chain_gradcheck(name: str):
    chain, sizes, weight, bias, inputs = chain_cases(torch.double)[name]
    tensors = leaves((chain, sizes, weight, bias, inputs))

    def function(*values):
        swap = dict(zip(map(id, tensors), values))
        weight_, bias_, *inputs_ = (swap.get(id(t), t) for t in (weight, bias, *inputs))
        return RecomputedChain.apply(chain, sizes, weight_, bias_, *inputs_)

    assert torch.autograd.gradcheck(function, tensors)


@pytest.mark.parametrize("name", chain_cases(torch.float))
def test_recomputed_chain_equals_plain_in_float32(name: str):
    case = chain_cases(torch.float)[name]
    got = outputs_and_grads(RecomputedChain.apply, case)
    expected = outputs_and_grads(RecomputedChain.plain, case)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_recomputed_chain_keeps_only_its_inputs():
    chain, sizes, weight, bias, inputs = chain_cases(torch.float)["linear, dropout"]
    x = inputs[0]
    counts = {}
    for name, function in (("fused", RecomputedChain.apply), ("plain", RecomputedChain.plain)):
        saved: list[int] = []

        def pack(tensor, saved=saved):
            saved.append(tensor.untyped_storage().data_ptr())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            function(chain, sizes, weight, bias, *inputs)
        counts[name] = set(saved) - {weight.untyped_storage().data_ptr()}
    # the fused function keeps x and the mask; autograd also keeps SiLU's output (W's input)
    assert counts["fused"] == {x.untyped_storage().data_ptr(), inputs[1].untyped_storage().data_ptr()}
    assert len(counts["plain"]) > len(counts["fused"])


def prologue(shared_in, gamma, beta, value_in, keep):
    shared = F.silu(shared_in)
    query, key = torch.addcmul(beta[0], shared, gamma[0]), torch.addcmul(beta[1], shared, gamma[1])
    return query, key, drop(F.silu(value_in), keep, 1.25)


def prologue_inputs(dtype: torch.dtype, dropout: bool):
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 5, 4), (2, 4), (2, 4), (2, 3, 5, 6), (5, 5)]
    shared_in, gamma, beta, value_in, bias = (
        torch.randn(s, generator=generator, dtype=dtype).requires_grad_() for s in shapes
    )
    keep = torch.rand(2, 3, 5, 6, generator=generator) > 0.2 if dropout else None
    key_mask = torch.ones(2, 3, 5, dtype=torch.bool)
    key_mask[1, 2, 3:] = False
    return bias, key_mask, (shared_in, gamma, beta, value_in, keep)


@pytest.mark.parametrize("function", ["softmax", "laplace"])
@pytest.mark.parametrize("dropout", [False, True], ids=["eval", "value-dropout"])
def test_prologued_attention_gradcheck(function: str, dropout: bool):
    bias, key_mask, inputs = prologue_inputs(torch.double, dropout)
    tensors = (bias, *inputs[:4])

    def attend(bias, shared_in, gamma, beta, value_in):
        return ProloguedAttention.apply(
            prologue, bias, key_mask, None, function, 0.0, False, shared_in, gamma, beta, value_in, inputs[4]
        )

    assert torch.autograd.gradcheck(attend, tensors)


@pytest.mark.parametrize("function", ["softmax", "relu2"])
@pytest.mark.parametrize("store", [False, True])
def test_prologued_attention_equals_plain_with_attention_dropout(function: str, store: bool):
    """Attention dropout 0.3 (the same seed drawn by both), value dropout, a causal mask, float32."""
    results = []
    for apply in (ProloguedAttention.apply, ProloguedAttention.plain):
        bias, key_mask, inputs = prologue_inputs(torch.float, True)
        causal = torch.ones(5, 5, dtype=torch.bool).tril()
        torch.manual_seed(3)
        out = apply(prologue, bias, key_mask, causal, function, 0.3, store, *inputs)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        results.append([out, *torch.autograd.grad(out, (bias, *inputs[:4]), grad)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def use_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecomputedChain, "apply", RecomputedChain.plain)
    monkeypatch.setattr(ProloguedAttention, "apply", ProloguedAttention.plain)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "options",
    [
        dict(chunk_size=4),
        dict(
            chunk_size=3, normalize_before_mega=False, normalize_before_ffn=False
        ),  # ragged chunks, post-norm
        dict(use_feature_dropout=True, attention_activation="laplace"),
    ],
    ids=["chunk4", "chunk3-postnorm", "feature-dropout-laplace"],
)
def test_sublayers_equal_the_plain_expressions(
    options: dict, training: bool, monkeypatch: pytest.MonkeyPatch
):
    """Gated attention and NFFN with the fused functions vs with their plain twins: same dropout draws, float64."""
    config = MegaConfig(
        **SIZES, **options, dropout_prob=0.2, hidden_dropout_prob=0.2, nffn_activation_dropout_prob=0.2
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, SIZES["hidden_size"], generator=generator, dtype=torch.double)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    results = []
    for plain in (False, True):
        if plain:
            use_plain(monkeypatch)
        torch.manual_seed(0)
        layers = [MovingAverageGatedAttention(config), NormalizedFeedForwardNetwork(config)]
        for layer in layers:
            layer.reset_parameters()
            layer.double().train(training)
        inputs = x.clone().requires_grad_()
        torch.manual_seed(1)
        out = layers[1](layers[0](inputs, mask))
        params = [p for layer in layers for p in layer.parameters()]
        results.append([out, *torch.autograd.grad(out.sum(), [inputs, *params])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_dropout_draw_is_a_seed_of_the_forward_rate_and_scale():
    torch.manual_seed(0)
    seeded, scale = Dropout(0.25).train().draw(torch.Size((400, 500)), torch.device("cpu"))
    keep = seeded.mask()
    assert keep.dtype == torch.bool and abs(keep.float().mean().item() - 0.75) < 0.01
    assert torch.equal(seeded.mask(), keep)  # redrawn the same in the backward
    assert abs(scale - 1 / kept_fraction(0.25)) < 1e-9
    feature, feature_scale = (
        Dropout(0.25, feature=True).train().draw(torch.Size((4, 3, 5, 6)), torch.device("cpu"))
    )
    assert feature.mask().shape == (4, 3, 1, 1) and feature_scale == 1 / 0.75
    assert Dropout(0.25).eval().draw(torch.Size((4, 5)), torch.device("cpu")) is None


def encoder_saved_units(chunk_size: int) -> float:
    """Saved bytes per layer of a small make-bench-shaped model (v = 2D, z = D/2), in [B, L, D] float32 units."""
    options = dict(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=2,
        shared_representation_size=8,
        intermediate_size=32,
        nffn_hidden_size=32,
        ema_projection_size=2,
        max_positions=64,
        chunk_size=chunk_size,
    )
    torch.manual_seed(0)
    encoder = MegaEncoder(MegaConfig(**options)).train()
    ids = torch.randint(2, 20, (2, 64))
    totals = saved_bytes(encoder, lambda: encoder(ids), layer_parts(encoder))
    return sum(totals.values()) / 2 / (2 * 64 * 16 * 4)


def test_saved_tensors_per_layer(monkeypatch: pytest.MonkeyPatch):
    """The fused layer keeps well under what autograd keeps for the same expressions (here 19.8 against 35.8)."""
    fused = encoder_saved_units(16)
    use_plain(monkeypatch)
    plain = encoder_saved_units(16)
    print(f"saved per layer: fused {fused:.2f}, plain {plain:.2f} × [B, L, D] float32")
    assert fused < 21 and fused < 0.6 * plain
