"""Parameter counts of the native model equal the official ones (docs/recipes.md#parameter-counts: counted from the
fairseq modules and arch defaults of facebookresearch/mega)."""

from __future__ import annotations

import pytest

from mega import MegaForSequenceClassification
from tests.official import OFFICIAL_PARAMS

VOCAB = 20  # token tasks: totals are given as a constant + D·V

# experiment → (options, the paper's Mega-chunk size); the totals are OFFICIAL_PARAMS[experiment] (full attention)
# and OFFICIAL_PARAMS[experiment + "_chunk"], vocab part excluded
RECIPES = {
    "lra_listops": (
        dict(
            hidden_size=80,
            num_hidden_layers=6,
            intermediate_size=160,
            shared_representation_size=64,
            nffn_hidden_size=160,
            normalization_type="layernorm",
            normalize_before_mega=False,
            normalize_before_ffn=False,
            max_positions=2002,
            num_labels=10,
        ),
        128,
    ),
    "lra_text": (
        dict(
            hidden_size=128,
            num_hidden_layers=4,
            intermediate_size=256,
            shared_representation_size=64,
            nffn_hidden_size=256,
            normalization_type="scalenorm",
            normalize_before_mega=False,
            normalize_before_ffn=False,
            max_positions=4002,
            num_labels=2,
        ),
        128,
    ),
    "lra_image": (
        dict(
            input_kind="real",
            hidden_size=160,
            num_hidden_layers=8,
            intermediate_size=320,
            shared_representation_size=96,
            nffn_hidden_size=320,
            normalization_type="batchnorm",
            max_positions=1024,
            num_labels=10,
            attention_activation="laplace",
        ),
        128,
    ),
    "lra_pathfinder": (
        dict(
            input_kind="real",
            hidden_size=128,
            num_hidden_layers=6,
            intermediate_size=256,
            shared_representation_size=64,
            nffn_hidden_size=256,
            normalization_type="batchnorm",
            max_positions=1024,
            num_labels=2,
            attention_activation="laplace",
        ),
        128,
    ),
    "lra_pathx": (
        dict(
            input_kind="real",
            hidden_size=64,
            num_hidden_layers=4,
            intermediate_size=128,
            shared_representation_size=32,
            nffn_hidden_size=128,
            normalization_type="syncbatchnorm",
            max_positions=16384,
            num_labels=2,
            attention_activation="laplace",
        ),
        4096,
    ),
    "sc_raw": (
        dict(
            input_kind="real",
            hidden_size=60,
            num_hidden_layers=6,
            intermediate_size=120,
            shared_representation_size=30,
            nffn_hidden_size=120,
            normalization_type="batchnorm",
            max_positions=16000,
            num_labels=10,
            attention_activation="laplace",
        ),
        1000,
    ),
    "sc_raw_big": (
        dict(
            input_kind="real",
            hidden_size=72,
            num_hidden_layers=6,
            intermediate_size=144,
            shared_representation_size=36,
            nffn_hidden_size=144,
            normalization_type="batchnorm",
            max_positions=16000,
            num_labels=10,
            attention_activation="laplace",
        ),
        1000,
    ),
}

# Retrieval: Text's encoder with 6 layers, shared by both documents (classifier input = 2D)
RECIPES["lra_retrieval"] = (dict(RECIPES["lra_text"][0], num_hidden_layers=6, dual_encoder=True), 128)


@pytest.mark.parametrize("task", RECIPES)
def test_official_parameter_counts(task: str):
    (options, chunk), full, chunked = RECIPES[task], OFFICIAL_PARAMS[task], OFFICIAL_PARAMS[f"{task}_chunk"]
    options = dict(options, relative_positional_bias="simple", truncation=1024, ema_projection_size=16)
    if options.get("input_kind") != "real":
        options.update(vocab_size=VOCAB, pad_token_id=0)
    embedding = (
        VOCAB * options["hidden_size"] if options.get("input_kind") != "real" else 2 * options["hidden_size"]
    )
    vocab_part = embedding if options.get("input_kind") != "real" else 0
    # full attention: SC-Raw's arch default is chunk 1000 (= its "full" figure)
    full_options = dict(options, chunk_size=1000) if task.startswith("sc_") else options
    counts = MegaForSequenceClassification(**full_options).param_counts()
    assert counts["total"] - vocab_part == full
    assert counts["embedding"] == embedding
    counts = MegaForSequenceClassification(**options, chunk_size=chunk).param_counts()
    assert counts["total"] - vocab_part == chunked


def test_listops_layer_count():
    options = dict(
        RECIPES["lra_listops"][0], vocab_size=VOCAB, pad_token_id=0, relative_positional_bias="simple"
    )
    layer = MegaForSequenceClassification(**options).encoder.layers[0]
    assert sum(p.numel() for p in layer.parameters()) == 97_683
