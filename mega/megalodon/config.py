"""MegalodonConfig: flat options of the Megalodon classifier (MegaConfig's names where the meaning is the same).

Defaults follow the paper's equations (Ma et al. 2024, arXiv 2404.08801); the `cema_*`, `shared_normalization`
and `candidate_activation` switches select what the public code (XuezheMax/megalodon) computes instead, see
CODE_VARIANT and docs/megalodon.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mega.config import (
    DROPOUT_OPTIONS,
    INPUT_KINDS,
    PAIR_COMBINES,
    POOLINGS,
    check_choice,
    check_inputs,
    check_option_types,
    check_probabilities,
    check_sizes,
)

SEQUENCE_NORMS = ("timestepnorm", "groupnorm")
FFN_ACTIVATIONS = ("silu", "swiglu")
POSITIONAL_ENCODINGS = ("rope", "simple")
BASE_ANGLES = ("free", "sigmoid")
SHARED_NORMALIZATIONS = ("l2", "rms_per_head")
CANDIDATE_ACTIVATIONS = ("silu", "linear")

# the options that make the layer compute what the public code computes (the paper's equations otherwise)
CODE_VARIANT: dict[str, Any] = {
    "cema_input_phase": False,  # h_t = α u_t + (1 − αδ) e^{iθ} h_{t−1}: the phase on the decay only
    "cema_input_expansion": False,  # no β: u_t = x_t
    "cema_base_angle": "sigmoid",  # θ_{j,k} = 2πk/h · σ(θ_j) instead of 2πk/h · ω_j
    "cema_skip": True,  # X' = CEMA(X) + ω ⊙ X: ω is a skip weight, not the base angles
    "cema_output_norm": True,  # RMSNorm on the CEMA output before the projections
    "shared_normalization": "rms_per_head",  # RMSNorm of each head's slice of Z, scale (κ)/√(z/H)
    "candidate_activation": "linear",  # Ĥ = X'W_h + (r ⊙ O)U_h + b_h without SiLU
}


@dataclass
class MegalodonConfig:
    # --- sizes ---
    vocab_size: int = 257
    hidden_size: int = 128  # d
    num_hidden_layers: int = 4
    shared_representation_size: int = 64  # z: shared Q/K width
    intermediate_size: int = 256  # v: value / attention-output width, also the classifier's hidden width
    nffn_hidden_size: int = 256  # FFN width
    ema_projection_size: int = 16  # h (MEGA's N): CEMA expansion dimension
    num_attention_heads: int = 1  # the 7B model uses 4; MEGA and the LRA models are single-head
    # --- attention ---
    chunk_size: int = -1  # > 0: Megalodon-chunk (attention within chunks of this length); -1: full attention
    is_decoder: bool = (
        False  # causal attention (needs bidirectional=False and normalization_type=timestepnorm)
    )
    bidirectional: bool = (
        True  # a second CEMA runs backwards in time (classification, as MEGA's LRA encoders)
    )
    truncation: int | None = None  # CEMA kernel length (None: the whole sequence)
    positional_encoding: str = "rope"  # rope (paper App. C) | simple (MEGA's learned relative bias)
    rope_base: float = 10000.0  # θ base of RoPE (the 7B model uses 100 000, §4.1)
    max_positions: int = 2048  # span of the simple bias without chunking (RoPE has no limit)
    # --- norms and FFN ---
    normalization_type: str = (
        "timestepnorm"  # before attention and at the end: timestepnorm (§3.2) | groupnorm
    )
    norm_num_groups: int = 16  # groups of the timestep / group norm (must divide hidden_size)
    norm_affine: bool = True
    norm_eps: float = 1e-5
    ffn_activation: str = "silu"  # silu | swiglu (SiLU(W₁x) ⊙ W₃x, the 7B model's)
    # --- dropout ---
    dropout_prob: float = 0.1  # embedding and each sub-layer's output
    hidden_dropout_prob: float = 0.0  # the CEMA output X' and the gated attention output r ⊙ O
    attention_probs_dropout_prob: float = 0.0  # attention weights
    nffn_activation_dropout_prob: float = 0.0  # the FFN's hidden activations
    classifier_dropout: float | None = None  # None: dropout_prob
    initializer_range: float = 0.02  # std of the linear layers' weights
    activation_checkpointing: bool = False  # training reruns each layer in the backward (mega.checkpointing)
    # --- paper (default) vs public code (CODE_VARIANT) ---
    cema_input_phase: bool = True  # paper eq. 2: α(cos θ + i sin θ) ⊙ u_t
    cema_input_expansion: bool = True  # paper eq. 1–2: u_t = β x_t
    cema_base_angle: str = "free"  # free: θ_{j,k} = 2πk/h · ω_j (eq. 3) | sigmoid: ω_j = σ(θ_j) (code)
    cema_skip: bool = False  # code: X' = CEMA(X) + ω ⊙ X
    cema_output_norm: bool = False  # code: RMSNorm(X') before the projections
    shared_normalization: str = "l2"  # l2: Z' = Z / ‖Z‖ (eq. 6) | rms_per_head (code)
    candidate_activation: str = "silu"  # silu: MEGA's eq. 20, which the paper keeps | linear (code)
    # --- inputs and head ---
    input_kind: str = "tokens"  # tokens (ids) | real (pixels, audio samples)
    pad_token_id: int | None = 0
    pooling: str = "mean"  # over real positions only
    num_labels: int = 2
    dual_encoder: bool = False  # Retrieval: one shared encoder on two documents
    pair_combine: str = "concat"  # concat | nli ([u, v, u*v, u-v])
    # read by mega.embeddings.TokenEmbedding (no token types in LRA)
    add_token_type_embeddings: bool = False
    type_vocab_size: int = 2

    def __post_init__(self) -> None:
        check_option_types(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the option and what to set."""
        for option, allowed in (
            ("normalization_type", SEQUENCE_NORMS),
            ("ffn_activation", FFN_ACTIVATIONS),
            ("positional_encoding", POSITIONAL_ENCODINGS),
            ("cema_base_angle", BASE_ANGLES),
            ("shared_normalization", SHARED_NORMALIZATIONS),
            ("candidate_activation", CANDIDATE_ACTIVATIONS),
            ("input_kind", INPUT_KINDS),
            ("pooling", POOLINGS),
            ("pair_combine", PAIR_COMBINES),
        ):
            check_choice(option, getattr(self, option), allowed, owner="MegalodonConfig")
        check_sizes(
            self,
            (
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "shared_representation_size",
                "intermediate_size",
                "nffn_hidden_size",
                "ema_projection_size",
                "num_attention_heads",
                "norm_num_groups",
                "max_positions",
                "num_labels",
            ),
        )
        if self.hidden_size % self.norm_num_groups:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by norm_num_groups={self.norm_num_groups}: "
                f"set norm_num_groups to a divisor of {self.hidden_size}"
            )
        heads = self.num_attention_heads
        for name in ("shared_representation_size", "intermediate_size"):
            if getattr(self, name) % heads:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not divisible by num_attention_heads={heads}"
                )
        if self.positional_encoding == "rope" and (self.shared_representation_size // heads) % 2:
            raise ValueError(
                f"positional_encoding='rope' rotates pairs of features: shared_representation_size / "
                f"num_attention_heads = {self.shared_representation_size // heads} must be even"
            )
        if self.is_decoder and (self.bidirectional or self.normalization_type != "timestepnorm"):
            raise ValueError(
                "is_decoder=True (causal) needs bidirectional=False and normalization_type='timestepnorm': "
                "a backward CEMA and a group norm over the whole sequence read future positions"
            )
        if self.truncation is not None and self.truncation < 1:
            raise ValueError(f"truncation={self.truncation} must be None (whole sequence) or >= 1")
        check_probabilities(self, DROPOUT_OPTIONS)
        check_inputs(self)

    @property
    def attention_span(self) -> int:
        """Positions covered by the simple relative bias (the chunk when chunking)."""
        return self.chunk_size if self.chunk_size > 0 else self.max_positions

    @property
    def head_dropout(self) -> float:
        return self.dropout_prob if self.classifier_dropout is None else self.classifier_dropout

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
