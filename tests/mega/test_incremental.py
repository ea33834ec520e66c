"""Incremental decoding through the cache equals one full causal forward pass."""

import pytest
import torch

import mega
from mega.cache import DecoderCache
from tests.mega.hf_lm_models import SMALL, incremental_logits

SMALL = dict(
    SMALL,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)


def causal_lm(seed=0, **options):
    torch.manual_seed(seed)
    model = mega.MegaForCausalLM(**{**SMALL, "bidirectional": False, **options}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model


VARIANTS = {
    "full-softmax-simple": dict(relative_positional_bias="simple"),
    "full-laplace-rotary": dict(relative_positional_bias="rotary", attention_activation="laplace"),
    "chunk4-softmax-simple": dict(relative_positional_bias="simple", use_chunking=True, chunk_size=4),
    "chunk5-relu2-rotary": dict(
        relative_positional_bias="rotary", use_chunking=True, chunk_size=5, attention_activation="relu2"
    ),
    "chunk4-postnorm-layernorm": dict(
        use_chunking=True,
        chunk_size=4,
        normalize_before_mega=False,
        normalize_before_ffn=False,
        normalization_type="layernorm",
    ),
}
# one token at a time, a prompt then tokens, and blocks that start and end inside chunks and cross boundaries
BLOCKS = {"tokens": [1] * 13, "prompt": [6] + [1] * 7, "ragged": [3, 1, 5, 2, 2]}


@pytest.mark.parametrize("blocks", BLOCKS.values(), ids=BLOCKS.keys())
@pytest.mark.parametrize("options", VARIANTS.values(), ids=VARIANTS.keys())
def test_incremental_equals_full_forward(options, blocks):
    model = causal_lm(**options)
    ids = torch.randint(3, SMALL["vocab_size"], (3, 13))
    full = model(ids).logits
    assert (incremental_logits(model, ids, blocks) - full).abs().max() <= 1e-5


@pytest.mark.parametrize("options", [dict(), dict(use_chunking=True, chunk_size=4)], ids=["full", "chunk4"])
def test_incremental_with_cross_attention_equals_full_forward(options):
    model = causal_lm(add_cross_attention=True, relative_positional_bias="simple", **options)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 10))
    memory = torch.randn(2, 6, SMALL["hidden_size"])
    memory_mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3], dtype=torch.bool)
    kwargs = dict(encoder_hidden_states=memory, encoder_attention_mask=memory_mask)
    full = model(ids, **kwargs).logits
    assert (incremental_logits(model, ids, [1] * 10, **kwargs) - full).abs().max() <= 1e-5
    assert (incremental_logits(model, ids, [4, 3, 3], **kwargs) - full).abs().max() <= 1e-5
    out = model.generate(ids[:, :2], max_new_tokens=4, **kwargs)  # greedy encoder-decoder generation
    assert torch.equal(model(out[:, :-1], **kwargs).logits[:, 1:].argmax(-1), out[:, 2:])


def test_cache_keeps_only_the_current_chunk_and_a_fixed_size_ema_state():
    model = causal_lm(use_chunking=True, chunk_size=4)
    cache = DecoderCache()
    model(torch.randint(3, 30, (2, 6)), cache=cache)
    for layer in cache.layers:
        assert layer.keys.shape[1] == 2  # positions 4 and 5 of the chunk that starts at 4
        assert layer.ema_state.shape == (2, SMALL["hidden_size"], SMALL["ema_projection_size"])
    model(torch.randint(3, 30, (2, 2)), cache=cache)
    assert all(layer.keys is None for layer in cache.layers)  # the chunk 4..7 is complete
    assert cache.length == 8


def test_selected_cache_continues_the_selected_sequences():
    model = causal_lm(use_chunking=True, chunk_size=4)
    ids = torch.randint(3, 30, (3, 9))
    cache = DecoderCache()
    model(ids[:, :6], cache=cache)
    picked = cache.select(torch.tensor([2, 0]))
    assert picked.length == 6
    got = model(ids[[2, 0], 6:], cache=picked).logits
    assert (got - model(ids[[2, 0]]).logits[:, 6:]).abs().max() <= 1e-5


def test_ema_truncation_beyond_cache_length_is_rejected():
    model = causal_lm(truncation=4)
    cache = DecoderCache()
    model(torch.randint(3, 30, (1, 4)), cache=cache)
    with pytest.raises(ValueError, match="truncation"):
        model(torch.randint(3, 30, (1, 1)), cache=cache)


def test_generate_greedy_matches_argmax_of_full_forward():
    model = causal_lm(use_chunking=True, chunk_size=4)
    prompt = torch.randint(3, 30, (2, 3))
    out = model.generate(prompt, max_new_tokens=7)
    assert out.shape == (2, 10) and torch.equal(out[:, :3], prompt)
    # each generated token is the argmax of the full forward over what came before
    logits = model(out[:, :-1]).logits
    assert torch.equal(logits[:, 2:].argmax(-1), out[:, 3:])


def test_generate_sampling_respects_top_k_and_seed():
    model = causal_lm()
    prompt = torch.randint(3, 30, (4, 2))
    first = model.generate(
        prompt,
        max_new_tokens=5,
        do_sample=True,
        temperature=0.7,
        top_k=3,
        generator=torch.Generator().manual_seed(1),
    )
    again = model.generate(
        prompt,
        max_new_tokens=5,
        do_sample=True,
        temperature=0.7,
        top_k=3,
        generator=torch.Generator().manual_seed(1),
    )
    assert torch.equal(first, again)
    logits = model(first[:, :-1]).logits[:, 1:]
    top3 = logits.topk(3, dim=-1).indices
    assert (top3 == first[:, 2:, None]).any(-1).all()
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, max_new_tokens=2, do_sample=True, temperature=0.0)
