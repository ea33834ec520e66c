"""Parity of our LM heads, cross-attention decoder and incremental decoding with the Hugging Face port."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import mega  # noqa: E402
from mega.hf import from_transformers  # noqa: E402
from tests.mega.hf_lm_models import SMALL, TOL, decoder_options, hf_model, incremental_logits  # noqa: E402

CAUSAL_VARIANTS = [
    dict(relative_positional_bias="simple"),
    dict(relative_positional_bias="rotary", add_lm_hidden_dense_layer=False),
    dict(relative_positional_bias="simple", attention_activation="laplace"),
    dict(relative_positional_bias="rotary", attention_activation="relu2"),
    dict(relative_positional_bias="simple", use_chunking=True, chunk_size=4),
    dict(
        relative_positional_bias="rotary",
        use_chunking=True,
        chunk_size=4,
        normalize_before_mega=False,
        normalize_before_ffn=False,
        normalization_type="layernorm",
    ),
]


@pytest.mark.parametrize("options", CAUSAL_VARIANTS)
def test_causal_lm_logits_and_loss_match_hf(options):
    reference = hf_model("MegaForCausalLM", **decoder_options(**options))
    ours = from_transformers(reference)
    assert isinstance(ours, mega.MegaForCausalLM)
    ids = torch.randint(3, SMALL["vocab_size"], (3, 12))
    labels = ids.clone()
    labels[0, 5:] = -100
    expected = reference(ids, labels=labels)
    got = ours(ids, labels=labels)
    assert (got.logits - expected.logits).abs().max() <= TOL
    assert abs(got.loss.item() - expected.loss.item()) <= TOL


@pytest.mark.parametrize(
    "options", [dict(), dict(add_lm_hidden_dense_layer=False, relative_positional_bias="simple")]
)
def test_masked_lm_logits_and_loss_match_hf(options):
    reference = hf_model("MegaForMaskedLM", **options)
    ours = from_transformers(reference)
    assert isinstance(ours, mega.MegaForMaskedLM)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = torch.full_like(ids, -100)
    labels[:, [2, 5]] = ids[:, [2, 5]]
    expected = reference(ids, attention_mask=mask, labels=labels)
    got = ours(ids, attention_mask=mask.bool(), labels=labels)
    real = mask.bool()
    assert (got.logits[real] - expected.logits[real]).abs().max() <= TOL
    assert abs(got.loss.item() - expected.loss.item()) <= TOL


def test_hidden_states_and_attentions_match_hf():
    reference = hf_model("MegaForCausalLM", **decoder_options(relative_positional_bias="simple"))
    ours = from_transformers(reference)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 9))
    expected = reference(ids, output_hidden_states=True, output_attentions=True)
    got = ours(ids, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(expected.hidden_states) == SMALL["num_hidden_layers"] + 1
    for ours_h, theirs_h in zip(got.hidden_states, expected.hidden_states):
        assert (ours_h - theirs_h).abs().max() <= TOL
    assert len(got.attentions) == SMALL["num_hidden_layers"]
    for ours_a, theirs_a in zip(got.attentions, expected.attentions):
        assert ours_a.shape == theirs_a.shape
        assert (ours_a - theirs_a).abs().max() <= TOL


@pytest.mark.parametrize("bias", ["simple", "rotary"])
def test_cross_attention_decoder_matches_hf(bias):
    reference = hf_model(
        "MegaForCausalLM", **decoder_options(add_cross_attention=True, relative_positional_bias=bias)
    )
    ours = from_transformers(reference)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 11))
    memory = torch.randn(2, 7, SMALL["hidden_size"])
    memory_mask = torch.ones(2, 7, dtype=torch.long)
    memory_mask[1, 4:] = 0
    expected = reference(
        ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask, output_attentions=True
    )
    got = ours(
        ids, encoder_hidden_states=memory, encoder_attention_mask=memory_mask.bool(), output_attentions=True
    )
    assert (got.logits - expected.logits).abs().max() <= TOL
    for ours_a, theirs_a in zip(got.cross_attentions, expected.cross_attentions):
        assert (ours_a - theirs_a).abs().max() <= TOL
    # step by step through the cache agrees with HF's full forward (HF's own incremental path shifts the
    # cross-attention position by one after the first step, so its full forward is the reference here)
    stepped = incremental_logits(
        ours, ids, [3] + [1] * 8, encoder_hidden_states=memory, encoder_attention_mask=memory_mask.bool()
    )
    assert (stepped - expected.logits).abs().max() <= TOL


def test_incremental_decoding_matches_hf_past_key_values():
    """Where HF's own cache is exact (softmax, no chunking, no cross-attention), ours agrees with it."""
    reference = hf_model("MegaForCausalLM", **decoder_options(relative_positional_bias="rotary"))
    ours = from_transformers(reference)
    ids = torch.randint(3, SMALL["vocab_size"], (2, 10))
    out = reference(ids[:, :4], use_cache=True)
    theirs, past = [out.logits], out.past_key_values
    for t in range(4, 10):
        out = reference(ids[:, t : t + 1], past_key_values=past, use_cache=True)
        theirs.append(out.logits)
        past = out.past_key_values
    theirs = torch.cat(theirs, dim=1)
    assert (incremental_logits(ours, ids, [4] + [1] * 6) - theirs).abs().max() <= TOL


def test_causal_head_rejects_bidirectional_ema():
    with pytest.raises(ValueError, match="bidirectional"):
        mega.MegaForCausalLM(**SMALL, bidirectional=True)
    reference = hf_model("MegaForCausalLM", is_decoder=True, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        from_transformers(reference)
