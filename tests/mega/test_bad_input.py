"""Invalid options and inputs fail early with an error that names the option, its value and the fix."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from mega import (
    MegaConfig,
    MegaEncoder,
    MegaForSequenceClassification,
    MegalodonConfig,
    MegalodonForSequenceClassification,
    TransformerConfig,
    TransformerForSequenceClassification,
)
from mega.config import check_option_types

SMALL = dict(
    vocab_size=30,
    hidden_size=16,
    num_hidden_layers=1,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=20,
    max_positions=16,
    pad_token_id=0,
)


@pytest.mark.parametrize(
    "options,words",
    [
        (dict(normalization_type="groupnorm"), ["normalization_type", "scalenorm", "layernorm"]),
        (dict(activation="tanh"), ["activation", "silu", "gelu_accurate"]),
        (dict(attention_activation="sigmoid"), ["attention_activation", "softmax", "laplace", "relu2"]),
        (dict(relative_positional_bias="alibi"), ["relative_positional_bias", "simple", "rotary"]),
        (
            dict(relative_positional_bias="rotary", shared_representation_size=7),
            ["shared_representation_size", "even"],
        ),
        (dict(use_chunking=True, chunk_size=0), ["use_chunking", "chunk_size"]),
        (dict(use_chunking=True, chunk_size=-1), ["chunk_size"]),
        (dict(pooling="max"), ["pooling", "mean", "cls", "last"]),
        (dict(input_kind="image"), ["input_kind", "tokens", "real"]),
        (dict(pair_combine="sum"), ["pair_combine", "concat", "nli"]),
        (dict(dropout_prob=1.5), ["dropout_prob"]),
        (dict(truncation=0), ["truncation"]),
    ],
)
def test_invalid_options(options: dict, words: list[str]):
    with pytest.raises(ValueError) as error:
        MegaForSequenceClassification(**{**SMALL, **options})
    for word in words:
        assert word in str(error.value)


def test_use_chunking_defaults_to_positive_chunk_size():
    assert MegaConfig(chunk_size=128).use_chunking is True
    assert MegaConfig(chunk_size=-1).use_chunking is False
    assert MegaConfig(chunk_size=128, use_chunking=False).use_chunking is False


def test_simple_bias_sequence_longer_than_max_positions():
    model = MegaEncoder(MegaConfig(**SMALL, relative_positional_bias="simple"))
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.ones(1, 17, dtype=torch.long))
    model(torch.ones(1, 16, dtype=torch.long))  # at the limit works


def test_token_ids_outside_vocabulary():
    model = MegaEncoder(MegaConfig(**SMALL))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 2, 30]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 2, 3]]))


def test_token_types_without_embeddings():
    model = MegaEncoder(MegaConfig(**SMALL))
    with pytest.raises(ValueError, match="add_token_type_embeddings"):
        model(torch.ones(1, 4, dtype=torch.long), token_type_ids=torch.zeros(1, 4, dtype=torch.long))
    typed = MegaEncoder(MegaConfig(**SMALL, add_token_type_embeddings=True))
    with pytest.raises(ValueError, match="type_vocab_size"):
        typed(torch.ones(1, 4, dtype=torch.long), token_type_ids=torch.full((1, 4), 2))


def test_input_kind_mismatch():
    with pytest.raises(ValueError, match="input_kind='real'"):
        MegaEncoder(MegaConfig(**SMALL))(torch.randn(1, 4))
    with pytest.raises(ValueError, match="input_kind='tokens'"):
        MegaEncoder(MegaConfig(**SMALL, input_kind="real"))(torch.ones(1, 4, dtype=torch.long))


def test_dual_encoder_inputs():
    net = MegaForSequenceClassification(**SMALL, dual_encoder=True)
    with pytest.raises(ValueError, match="input2"):
        net(torch.ones(1, 4, dtype=torch.long))
    single = MegaForSequenceClassification(**SMALL)
    with pytest.raises(ValueError, match="dual_encoder"):
        single(torch.ones(1, 4, dtype=torch.long), input2=torch.ones(1, 4, dtype=torch.long))


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="chunk_sise"):
        MegaForSequenceClassification(**SMALL, chunk_sise=128)


def _wrong_value(kind: object) -> object:
    """A value of another type than the annotation `kind` allows."""
    return 3 if "str" in str(kind) else "abc"


@pytest.mark.parametrize("config_class", [MegaConfig, TransformerConfig, MegalodonConfig])
def test_every_option_of_the_wrong_type_is_named_with_its_value_and_type(config_class: type) -> None:
    hints = typing.get_type_hints(config_class)
    for field in dataclasses.fields(config_class):
        value = _wrong_value(hints[field.name])
        with pytest.raises(TypeError) as error:
            config_class(**{field.name: value})
        message = str(error.value)
        assert f"{config_class.__name__}.{field.name}={value!r} has type" in message, message
        assert "expected" in message


def test_option_types_are_checked_without_building_the_config() -> None:
    check_option_types(MegaConfig, {"chunk_size": 128, "dropout_prob": 0, "truncation": None})
    with pytest.raises(TypeError, match=r"MegaConfig.chunk_size='abc' has type str; expected int"):
        check_option_types(MegaConfig, {"chunk_size": "abc"})
    with pytest.raises(TypeError, match="MegaConfig.chunk_size=True has type bool; expected int"):
        check_option_types(MegaConfig, {"chunk_size": True})
    with pytest.raises(TypeError, match="MegaConfig has no option chunk_sise"):
        check_option_types(MegaConfig, {"chunk_sise": 128})
    with pytest.raises(TypeError, match=r"^model.hidden_size=1.5 has type float; expected int$"):
        check_option_types(MegaConfig, {"hidden_size": 1.5}, prefix="model")
    assert MegaForSequenceClassification.config_class is MegaConfig
    assert TransformerForSequenceClassification.config_class is TransformerConfig
    assert MegalodonForSequenceClassification.config_class is MegalodonConfig
