"""The recomputing (or storing) attention function has the gradients of the plain expression."""

from __future__ import annotations

import pytest
import torch

from mega import MegaConfig, MegaEncoder
from mega.attention import RecomputedAttention, attention_weights, drop_weights


def plain(query, key, value, bias, key_mask, causal, function, p, seed):
    weights = attention_weights(query, key, bias, key_mask, causal, function)
    if p > 0:
        (weights,) = drop_weights(weights, p, seed)
    return torch.matmul(weights, value)


@pytest.mark.parametrize("function", ["softmax", "laplace", "relu2"])
@pytest.mark.parametrize("causal_on", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("store", [False, True])
def test_recomputed_attention_gradients(function: str, causal_on: bool, p: float, store: bool):
    torch.manual_seed(0)
    shapes = [(2, 3, 5, 4), (2, 3, 5, 4), (2, 3, 5, 6), (5, 5)]
    query, key, value, bias = (torch.randn(s, dtype=torch.double, requires_grad=True) for s in shapes)
    key_mask = torch.ones(2, 3, 5, dtype=torch.bool)
    key_mask[1, 2, 3:] = False
    key_mask[1, 1] = False  # a chunk that is all padding
    causal = torch.ones(5, 5, dtype=torch.bool).tril() if causal_on else None
    grad = torch.randn(2, 3, 5, 6, dtype=torch.double)

    torch.manual_seed(1)
    out = RecomputedAttention.apply(query, key, value, bias, key_mask, causal, function, p, store)
    got = torch.autograd.grad(out, (query, key, value, bias), grad)
    torch.manual_seed(1)
    seed = int(torch.randint(0, 2**62, (1,))) if p > 0 else None
    expected_out = plain(query, key, value, bias, key_mask, causal, function, p, seed)
    expected = torch.autograd.grad(expected_out, (query, key, value, bias), grad)
    torch.testing.assert_close(out, expected_out)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("chunk_size", [-1, 4])
def test_storing_equals_recomputing_in_the_encoder(chunk_size: int):
    """attention_store_max_chunk changes what the backward keeps, not the step's outputs or gradients."""
    options = dict(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=2,
        shared_representation_size=8,
        intermediate_size=24,
        nffn_hidden_size=24,
        ema_projection_size=4,
        max_positions=32,
        chunk_size=chunk_size,
        relative_positional_bias="simple",
    )
    torch.manual_seed(0)
    recompute = MegaEncoder(MegaConfig(**options)).train()
    store = MegaEncoder(MegaConfig(**options, attention_store_max_chunk=32)).train()
    store.load_state_dict(recompute.state_dict())
    ids = torch.randint(2, 30, (2, 12))
    results = []
    for model in (recompute, store):
        torch.manual_seed(1)
        out = model(ids)
        out.square().mean().backward()
        results.append((out, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)
