"""Mixed precision on CPU autocast, which runs the same autocast logic as CUDA (bf16 and fp16).

The yardstick is the same math in plain autograd ops under the same autocast: for each custom autograd function
PLAIN_TWINS holds that plain version. A mixed-precision result (outputs, gradients) must be within
TOLERANCE_FACTOR × the error of the plain version, both measured against the float32 result of the same inputs
and weights. So a custom function may round differently, but must not lose more precision than autograd would.

To cover a new custom autograd function: add `Function: plain_twin` to PLAIN_TWINS (the model tests then also
run a plain-autograd model with it) and a case to FUNCTION_CASES.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import mega
from mega.attention import ProloguedAttention, RecomputedAttention, attention_weights, drop_weights
from mega.cache import DecoderCache
from mega.dropout import MaskedScale
from mega.ema import CircularConvolution
from mega.fused import RecomputedChain, drop

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the custom path's relative error may exceed the plain version's by this factor (rounding order differs). Measured
# worst case over these grids: 1.05 (softmax with stored half probabilities); taking the softmax backward in bf16
# instead of fp32 reaches 1.17 and fails. `pytest -s` prints every pair of errors.
TOLERANCE_FACTOR = 1.1
# errors below this are round-off of the float32 reference itself (no comparison is meaningful there)
FLOAT32_FLOOR = 1e-5


def plain_attention(query, key, value, bias, key_mask, causal, function, dropout_p, store=False):
    """RecomputedAttention's math in autograd ops, drawing the dropout seed the same way."""
    seed = int(torch.randint(0, 2**62, (1,))) if dropout_p > 0 else None
    weights = attention_weights(query, key, bias, key_mask, causal, function)
    if seed is not None:
        (weights,) = drop_weights(weights, dropout_p, seed)
    return torch.matmul(weights, value)


def plain_convolution(x, kernel):
    n = kernel.size(-1)
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * torch.fft.rfft(kernel), n=n)[..., : x.size(-1)]


def plain_masked_scale(x, keep, scale):
    return x * keep.to(x.dtype) * scale


PLAIN_TWINS: dict[type[torch.autograd.Function], Callable] = {
    RecomputedAttention: plain_attention,
    CircularConvolution: plain_convolution,
    MaskedScale: plain_masked_scale,
    RecomputedChain: RecomputedChain.plain,
    ProloguedAttention: ProloguedAttention.plain,
}


@pytest.fixture
def plain_autograd(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Calling it replaces every custom autograd function by its plain twin for the rest of the test."""

    def swap() -> None:
        for function, twin in PLAIN_TWINS.items():
            monkeypatch.setattr(function, "apply", twin)

    return swap


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    return float((got.double() - expected).norm() / expected.norm().clamp_min(1e-30))


def flat_grads(tensors) -> torch.Tensor:
    return torch.cat([t.grad.flatten() for t in tensors if t.grad is not None])


def check_against_plain(name: str, exact: torch.Tensor, custom: torch.Tensor, plain: torch.Tensor) -> None:
    assert torch.isfinite(custom).all(), f"{name}: non-finite values under autocast"
    error, plain_error = relative_error(custom, exact), relative_error(plain, exact)
    print(f"{name}: relative error {error:.2e}, plain autograd {plain_error:.2e}")
    assert error <= TOLERANCE_FACTOR * plain_error + FLOAT32_FLOOR, (
        f"{name}: relative error {error:.3g} vs {plain_error:.3g} for plain autograd under the same autocast"
    )


# ---------------------------------------------------------------- one function at a time


def attention_inputs(function: str, causal: bool, dropout: float, store: bool):
    generator = torch.Generator().manual_seed(0)
    shapes = [
        (2, 3, 64, 8),
        (2, 3, 64, 8),
        (2, 3, 64, 6),
        (64, 64),
    ]  # rows long enough for round-off to add up
    tensors = [torch.randn(s, generator=generator).requires_grad_() for s in shapes]
    key_mask = torch.ones(2, 3, 64, dtype=torch.bool)
    key_mask[1, 2, 40:] = False
    key_mask[1, 1] = False  # a chunk that is all padding
    mask = torch.ones(64, 64, dtype=torch.bool).tril() if causal else None
    return tensors, (*tensors, key_mask, mask, function, dropout, store)


def convolution_inputs():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(s, generator=generator).requires_grad_() for s in ((2, 3, 10), (3, 20))]
    return tensors, tuple(tensors)


def masked_scale_inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=generator).requires_grad_()
    return [x], (x, torch.rand(4, 9, generator=generator) > 0.3, 1 / 0.7)


def silu_dropout(h, keep, scale):
    return drop(F.silu(h), keep, scale)


def mix(x, gate_in, hidden, keep, scale):
    return torch.addcmul(x, torch.sigmoid(gate_in), silu_dropout(hidden, keep, scale) - x)


def chain_inputs(kind: str):
    """The layers' uses of RecomputedChain: the residual mix, a linear fed by a chain, a tensor bias."""
    generator = torch.Generator().manual_seed(0)
    x, a, b = (torch.randn(3, 40, 16, generator=generator).requires_grad_() for _ in range(3))
    keep = torch.rand(3, 40, 16, generator=generator) > 0.1
    if kind == "mix":
        return [x, a, b], (mix, None, None, None, x, a, b, keep, 1 / 0.9)
    weight = torch.randn(24, 16, generator=generator).requires_grad_()
    if kind == "linear":
        bias = torch.randn(24, generator=generator).requires_grad_()
        return [x, weight, bias], (silu_dropout, None, weight, bias, x, keep, 1 / 0.9)
    bias = torch.randn(3, 40, 24, generator=generator).requires_grad_()
    return [x, a, weight, bias], (lambda o, r: o * F.silu(r), None, weight, bias, x, a)


def attention_prologue(shared_in, gamma, beta, value_in, keep):
    shared = F.silu(shared_in)
    query, key = torch.addcmul(beta[0], shared, gamma[0]), torch.addcmul(beta[1], shared, gamma[1])
    return query, key, drop(F.silu(value_in), keep, 1 / 0.9)


def prologue_inputs(function: str, dropout: float, store: bool):
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 64, 8), (2, 8), (2, 8), (2, 3, 64, 6), (64, 64)]
    shared_in, gamma, beta, value_in, bias = (
        torch.randn(s, generator=generator).requires_grad_() for s in shapes
    )
    keep = torch.rand(2, 3, 64, 6, generator=generator) > 0.1
    key_mask = torch.ones(2, 3, 64, dtype=torch.bool)
    key_mask[1, 2, 40:] = False
    inputs = (shared_in, gamma, beta, value_in, keep)
    arguments = (attention_prologue, bias, key_mask, None, function, dropout, store, *inputs)
    return [shared_in, gamma, beta, value_in, bias], arguments


# name -> (function, inputs()): inputs() returns (leaves to differentiate, arguments of Function.apply)
FUNCTION_CASES = {
    **{
        f"attention-{f}-{'causal' if c else 'bidir'}-p{p}-{'store' if s else 'recompute'}": (
            RecomputedAttention,
            lambda f=f, c=c, p=p, s=s: attention_inputs(f, c, p, s),
        )
        for f in ("softmax", "laplace", "relu2")
        for c in (False, True)
        for p in (0.0, 0.2)
        for s in (False, True)
        if not (s and f != "softmax")  # only softmax stores
    },
    "circular-convolution": (CircularConvolution, convolution_inputs),
    "masked-scale": (MaskedScale, masked_scale_inputs),
    **{
        f"chain-{kind}": (RecomputedChain, lambda kind=kind: chain_inputs(kind))
        for kind in ("mix", "linear", "bias")
    },
    **{
        f"prologued-attention-{f}-p{p}-{'store' if s else 'recompute'}": (
            ProloguedAttention,
            lambda f=f, p=p, s=s: prologue_inputs(f, p, s),
        )
        for f, p, s in (
            ("softmax", 0.0, False),
            ("softmax", 0.2, False),
            ("softmax", 0.2, True),
            ("laplace", 0.2, False),
        )
    },
}


def function_step(apply: Callable, inputs: Callable, dtype: torch.dtype | None) -> tuple[torch.Tensor, ...]:
    leaves, arguments = inputs()
    torch.manual_seed(1)  # the same dropout draws in every run
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = apply(*arguments)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    out.float().mul(grad).sum().backward()
    return out.detach(), flat_grads(leaves)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("case", FUNCTION_CASES, ids=FUNCTION_CASES)
def test_custom_function_as_accurate_as_plain_autograd(case: str, dtype: torch.dtype):
    function, inputs = FUNCTION_CASES[case]
    twin = PLAIN_TWINS[function]
    exact_out, exact_grads = function_step(function.apply, inputs, None)
    out, grads = function_step(function.apply, inputs, dtype)
    plain_out, plain_grads = function_step(twin, inputs, dtype)
    assert out.dtype == plain_out.dtype, "the output dtype differs from the plain expression's"
    check_against_plain(f"{case} output", exact_out, out, plain_out)
    check_against_plain(f"{case} gradients", exact_grads, grads, plain_grads)


# ---------------------------------------------------------------- whole models

SIZES = dict(
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    shared_representation_size=8,
    nffn_hidden_size=24,
    ema_projection_size=4,
    relative_positional_bias="simple",
)
BASE = dict(
    SIZES,
    vocab_size=30,
    pad_token_id=0,
    max_positions=64,
    num_labels=3,
    dropout_prob=0.1,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    nffn_activation_dropout_prob=0.1,
)
# one option changed at a time from BASE (full attention, softmax, scalenorm, prenorm, bidirectional EMA)
MODEL_GRID = {
    "base": {},
    "chunk8": dict(chunk_size=8),
    "chunk7-ragged": dict(chunk_size=7),
    "laplace": dict(attention_activation="laplace"),
    "relu2-chunk8": dict(attention_activation="relu2", chunk_size=8),
    "rmsnorm": dict(normalization_type="rmsnorm"),
    "layernorm-postnorm": dict(
        normalization_type="layernorm", normalize_before_mega=False, normalize_before_ffn=False
    ),
    "batchnorm": dict(normalization_type="batchnorm"),
    "truncation6": dict(truncation=6),
    "causal-ema": dict(bidirectional=False),
    "rotary": dict(relative_positional_bias="rotary"),
    "store-probabilities": dict(attention_store_max_chunk=64),
    "feature-dropout": dict(use_feature_dropout=True),
    "real-input": dict(input_kind="real"),
}


def classifier_step(options: dict, dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and parameter gradients of one training step (same weights, batch and dropout draws each call)."""
    torch.manual_seed(0)
    net = mega.MegaForSequenceClassification(**{**BASE, **options}).train()
    generator = torch.Generator().manual_seed(1)
    if options.get("input_kind") == "real":
        inputs = torch.randn(3, 20, generator=generator)
    else:
        inputs = torch.randint(1, BASE["vocab_size"], (3, 20), generator=generator)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 13:] = False
    labels = torch.tensor([0, 1, 2])
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = net(inputs, mask=mask)
        loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    assert torch.isfinite(loss)
    return logits.detach(), flat_grads(net.parameters())


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("options", MODEL_GRID.values(), ids=MODEL_GRID.keys())
def test_mega_classifier_under_autocast(options: dict, dtype: torch.dtype, plain_autograd):
    exact = classifier_step(options, None)
    custom = classifier_step(options, dtype)
    plain_autograd()
    plain = classifier_step(options, dtype)
    check_against_plain("logits", exact[0], custom[0], plain[0])
    check_against_plain("gradients", exact[1], custom[1], plain[1])


LM = dict(SIZES, vocab_size=40, max_positions=32, add_cross_attention=True, chunk_size=4)


def causal_lm() -> mega.MegaForCausalLM:
    torch.manual_seed(0)
    return mega.MegaForCausalLM(**LM)


def lm_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, LM["vocab_size"], (2, 11), generator=generator)
    memory = torch.randn(2, 6, LM["hidden_size"], generator=generator)
    memory_mask = torch.ones(2, 6, dtype=torch.bool)
    memory_mask[0, 4:] = False
    return ids, memory, memory_mask


def lm_step(dtype: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor]:
    lm = causal_lm().train()
    ids, memory, memory_mask = lm_batch()
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = lm(ids, labels=ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask)
    out.loss.backward()
    return out.logits.detach(), flat_grads(lm.parameters())


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_causal_lm_with_cross_attention_trains_under_autocast(dtype: torch.dtype, plain_autograd):
    exact, custom = lm_step(None), lm_step(dtype)
    plain_autograd()
    plain = lm_step(dtype)
    check_against_plain("lm logits", exact[0], custom[0], plain[0])
    check_against_plain("lm gradients", exact[1], custom[1], plain[1])


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_cached_decoding_under_autocast(dtype: torch.dtype):
    """Token-by-token decoding under autocast is as close to the float32 full pass as the full pass under autocast."""
    lm = causal_lm().eval()
    ids, memory, memory_mask = lm_batch()
    cross = dict(encoder_hidden_states=memory, encoder_attention_mask=memory_mask)
    with torch.no_grad():
        exact = lm(ids, **cross).logits
        with torch.autocast("cpu", dtype=dtype):
            full = lm(ids, **cross).logits
            cache, steps = DecoderCache(), []
            for t in range(ids.size(1)):
                steps.append(lm(ids[:, t : t + 1], cache=cache, **cross).logits)
    check_against_plain("cached decoding logits", exact, torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_transformer_baseline_under_autocast(dtype: torch.dtype):
    """No custom functions here: only finite results and float32 parameters and gradients are checked."""
    torch.manual_seed(0)
    net = mega.TransformerForSequenceClassification(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_positions=32,
        num_labels=3,
    ).train()
    ids = torch.randint(1, 30, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[0, 12:] = False
    with torch.autocast("cpu", dtype=dtype):
        loss = F.cross_entropy(net(ids, mask=mask).float(), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = flat_grads(net.parameters())
    assert torch.isfinite(loss) and torch.isfinite(grads).all() and grads.dtype == torch.float32
