"""MegaConfig: every field of Hugging Face's MegaConfig (same names, same defaults) plus the LRA extras."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NORMS = ("layernorm", "scalenorm", "rmsnorm", "batchnorm", "syncbatchnorm")
ACTIVATIONS = ("silu", "relu", "linear", "gelu", "gelu_accurate")
ATTENTION_FUNCTIONS = ("softmax", "laplace", "relu2")
POSITIONAL_BIASES = ("simple", "rotary")
INPUT_KINDS = ("tokens", "real")
POOLINGS = ("mean", "cls", "last")
PAIR_COMBINES = ("concat", "nli")
# the dropout probabilities of MegaConfig and MegalodonConfig (the same names and meaning)
DROPOUT_OPTIONS = (
    "dropout_prob",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "nffn_activation_dropout_prob",
    "classifier_dropout",
)


@dataclass
class MegaConfig:
    # --- Hugging Face MegaConfig fields (transformers 4.37.2), same order and defaults ---
    vocab_size: int = 30522
    hidden_size: int = 128  # D
    num_hidden_layers: int = 4
    intermediate_size: int = 256  # v: value / attention-output width (not the FFN width)
    ema_projection_size: int = 16  # N: EMA expansion dimension
    bidirectional: bool = True
    shared_representation_size: int = 64  # z: shared Q/K width
    use_chunking: bool | None = None  # None: chunk_size > 0 (HF's default is False; config.json states it)
    chunk_size: int = -1
    truncation: int | None = None  # EMA kernel length T (None: the whole sequence)
    normalize_before_mega: bool = True
    normalization_type: str = "scalenorm"
    norm_affine: bool = True
    activation: str = "silu"
    attention_activation: str = "softmax"
    dropout_prob: float = 0.1
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    use_feature_dropout: bool = False
    use_normalized_ffn: bool = True
    nffn_hidden_size: int = 256  # F
    normalize_before_ffn: bool = True
    nffn_activation_dropout_prob: float = 0.1
    max_positions: int = 2048
    add_token_type_embeddings: bool = False
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    ema_delta_alpha_range: float = 0.2
    ema_beta_range: float = 0.02
    ema_gamma_omega_range: float = 1.0
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    relative_positional_bias: str = "rotary"
    classifier_dropout: float | None = (
        None  # None: dropout_prob (reference); HF falls back to hidden_dropout_prob
    )
    use_cache: bool = True
    add_lm_hidden_dense_layer: bool = True
    is_decoder: bool = False  # HF PretrainedConfig field: causal attention mask
    add_cross_attention: bool = False  # HF PretrainedConfig field: decoder blocks attend to encoder states
    tie_word_embeddings: bool = True  # HF PretrainedConfig field: LM heads share the token embedding matrix

    # --- LRA extras ---
    input_kind: str = "tokens"  # "tokens" (ids) or "real" (pixels, audio samples)
    pooling: str = "mean"  # over real positions only
    num_labels: int = 2
    dual_encoder: bool = False  # Retrieval: one shared encoder on two documents
    pair_combine: str = "concat"  # "concat" (official code) or "nli" ([u, v, u*v, u-v])
    # softmax attention keeps its probabilities and dropout multiplier for the backward when a chunk has at most
    # this many keys (B·L·C·8 bytes more per layer), else recomputes them. -1 (default): always recompute, the
    # least memory; storing measured ≈5–7 % faster at full attention (L 512–1024), no gain at chunk 128
    attention_store_max_chunk: int = -1
    # in training, keep only each layer's input for the backward and rerun the layer there (mega.checkpointing):
    # activation memory of a layer down to [B, L, D], for one more forward per step; gradients are unchanged
    activation_checkpointing: bool = False

    # --- switches for the HF port's deviations (defaults = reference; mega.hf sets the port's values) ---
    final_norm: bool | None = None  # None: a norm after the last layer when that layer is prenorm (reference)
    mask_padded_states: bool = True  # zero padded positions after the embedding and at the output (reference)
    embedding_dropout: bool = True  # dropout_prob on the embedding output (reference; the port has none)
    rmsnorm_discards_normalization: bool = False  # the port's RMSNorm only multiplies by its weight

    def __post_init__(self) -> None:
        check_option_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.use_chunking is None:
            self.use_chunking = self.chunk_size > 0
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the option and the allowed values."""
        check_choice("normalization_type", self.normalization_type, NORMS)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("attention_activation", self.attention_activation, ATTENTION_FUNCTIONS)
        check_choice("relative_positional_bias", self.relative_positional_bias, POSITIONAL_BIASES)
        check_choice("input_kind", self.input_kind, INPUT_KINDS)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("pair_combine", self.pair_combine, PAIR_COMBINES)
        check_sizes(
            self,
            (
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "intermediate_size",
                "ema_projection_size",
                "shared_representation_size",
                "max_positions",
                "num_labels",
                "type_vocab_size",
            ),
        )
        if self.use_normalized_ffn and self.nffn_hidden_size < 1:
            raise ValueError(
                f"MegaConfig.nffn_hidden_size={self.nffn_hidden_size} must be >= 1 "
                "when use_normalized_ffn=True (or set use_normalized_ffn=False)"
            )
        if self.relative_positional_bias == "rotary" and self.shared_representation_size % 2:
            raise ValueError(
                f"relative_positional_bias='rotary' needs an even shared_representation_size, got "
                f"{self.shared_representation_size}: make it even or use relative_positional_bias='simple'"
            )
        if self.use_chunking and self.chunk_size <= 0:
            raise ValueError(
                f"use_chunking=True needs chunk_size > 0, got chunk_size={self.chunk_size}: "
                "set chunk_size (e.g. 128) or use_chunking=False"
            )
        if self.truncation is not None and self.truncation < 1:
            raise ValueError(f"truncation={self.truncation} must be None (whole sequence) or >= 1")
        check_probabilities(self, DROPOUT_OPTIONS)
        check_inputs(self)
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError(
                "add_cross_attention=True needs is_decoder=True (cross-attention blocks are decoder "
                "blocks, as in HF)"
            )
        if self.input_kind == "real" and self.add_token_type_embeddings:
            raise ValueError("add_token_type_embeddings=True needs input_kind='tokens'")

    # --- derived sizes ---
    @property
    def attention_span(self) -> int:
        """P: positions covered by the simple relative bias (the chunk when chunking)."""
        return self.chunk_size if self.use_chunking else self.max_positions

    @property
    def has_final_norm(self) -> bool:
        if self.final_norm is not None:
            return self.final_norm
        return self.normalize_before_ffn if self.use_normalized_ffn else self.normalize_before_mega

    @property
    def head_dropout(self) -> float:
        return self.dropout_prob if self.classifier_dropout is None else self.classifier_dropout

    # --- (de)serialisation ---
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MegaConfig:
        """Build from a dict such as an HF config.json; keys that are not MegaConfig fields are logged and ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        ignored = sorted(set(values) - names)
        if ignored:
            log.info(
                "MegaConfig.from_dict: ignoring %d keys that are not MegaConfig fields: %s",
                len(ignored),
                ignored,
            )
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json_file(cls, path: str | Path) -> MegaConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _accepts(kind: Any, value: Any) -> bool:
    """Whether `value` fits the annotation `kind` (int, float, bool, str, or a union of them with None)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_accepts(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:  # bool is an int subclass, but `chunk_size=true` is a mistake
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if kind is float:  # an integer is a fine float (dropout_prob: 0)
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    return "None" if kind is type(None) else getattr(kind, "__name__", str(kind))


def check_option_types(config_class: type, options: dict[str, Any], prefix: str | None = None) -> None:
    """Raise TypeError naming the first of `options` that the config dataclass `config_class` has no field for, or
    whose value does not have the field's declared type (e.g. `MegaConfig.chunk_size='abc' has type str; expected
    int`; `prefix` replaces the class name, e.g. "model"). Cheap: callers may check options before building
    anything (train.py does, before its heavy imports)."""
    hints = typing.get_type_hints(config_class)
    name = prefix or config_class.__name__
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(config_class)})
    if unknown:
        close = difflib.get_close_matches(unknown[0], hints, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"its options: {', '.join(sorted(hints))}"
        raise TypeError(f"{name} has no option {', '.join(unknown)} ({config_class.__name__}; {hint})")
    for option, value in options.items():
        if not _accepts(hints[option], value):
            raise TypeError(
                f"{name}.{option}={value!r} has type {type(value).__name__}; expected {_type_name(hints[option])}"
            )


def check_choice(option: str, value: str, allowed: tuple[str, ...], owner: str = "MegaConfig") -> None:
    if value not in allowed:
        raise ValueError(f"{owner}.{option}={value!r} is not supported; allowed values: {', '.join(allowed)}")


def check_sizes(config: Any, names: tuple[str, ...]) -> None:
    """Each named size of the config must be >= 1."""
    for name in names:
        if int(getattr(config, name)) < 1:
            raise ValueError(f"{type(config).__name__}.{name}={getattr(config, name)} must be >= 1")


def check_probabilities(config: Any, names: tuple[str, ...]) -> None:
    """Each named dropout probability of the config must be None or in [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{name}={value} must be in [0, 1)")


def check_inputs(config: Any) -> None:
    """pad_token_id inside the vocabulary; no <CLS> pooling of real-valued inputs."""
    if config.pad_token_id is not None and not 0 <= config.pad_token_id < config.vocab_size:
        raise ValueError(
            f"pad_token_id={config.pad_token_id} must be in [0, vocab_size={config.vocab_size}) or None"
        )
    if config.input_kind == "real" and config.pooling == "cls":
        raise ValueError(
            "pooling='cls' needs input_kind='tokens' (real-valued inputs have no <CLS> token): "
            "use pooling='mean'"
        )
