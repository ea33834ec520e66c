"""Conversion from a Hugging Face `transformers` MegaModel (the port) to our MegaEncoder with the same weights.

The converted encoder reproduces the port, deviations included (see README "Model"): no final norm, no
embedding dropout, padded positions not zeroed, the port's RMSNorm, the simple bias sized by max_positions.
`transformers` is not imported here: the function reads the model's config and state dict.
"""

from __future__ import annotations

import dataclasses
import re

from mega.config import MegaConfig
from mega.encoder import MegaEncoder

# port name → ours (inside each layer), applied in order
_RENAMES = [
    (r"^embedding_layer\.word_embeddings\.", "embed.tokens."),
    (r"^embedding_layer\.token_type_embeddings\.", "embed.token_types."),
    (r"\.mega_layer\.", ".attn."),
    (r"\.nffn\.", ".ffn."),
    (r"\.norm\.norm\.scalar$", ".norm.weight"),
    (r"\.norm\.norm\.", ".norm."),
    (r"\.ema_gate\.damping_factor$", ".ema.delta"),
    (r"\.ema_gate\.decay_factor$", ".ema.alpha"),
    (r"\.ema_gate\.ema_expansion_matrix$", ".ema.beta"),
    (r"\.ema_gate\.kernel_projection_matrix$", ".ema.gamma"),
    (r"\.ema_gate\.residual_weight$", ".ema.omega"),
    (r"\.qk_weight$", ".qk_gamma"),
    (r"\.qk_bias$", ".qk_beta"),
    (r"\.rel_pos_bias\.rel_pos_bias$", ".rel_pos.weight"),
    (r"\.rel_pos_bias\.alpha$", ".rel_pos.alpha"),
    (r"\.rel_pos_bias\.b_param$", ".rel_pos.beta"),
]
_SKIPPED = re.compile(r"^pooler\.|\.rel_pos_bias\._float_tensor$|^embedding_layer\.token_type_ids$")


def config_from_transformers(hf_config) -> MegaConfig:
    """Our MegaConfig for an HF MegaConfig, with the switches that reproduce the port."""
    names = {f.name for f in dataclasses.fields(MegaConfig)}
    values = {k: v for k, v in hf_config.to_dict().items() if k in names}
    values.update(final_norm=False, mask_padded_states=False, embedding_dropout=False,
                  rmsnorm_discards_normalization=True, use_chunking=bool(hf_config.use_chunking))
    if not hf_config.use_chunking and hf_config.chunk_size > 0:
        values["max_positions"] = hf_config.chunk_size  # the port sizes its bias by chunk_size even then
    return MegaConfig(**values)


def from_transformers(hf_model) -> MegaEncoder:
    """A MegaEncoder computing what `hf_model` (a transformers MegaModel) computes, with its weights copied."""
    config = config_from_transformers(hf_model.config)
    encoder = MegaEncoder(config)
    state = {}
    for name, tensor in hf_model.state_dict().items():
        if _SKIPPED.search(name):
            continue
        for pattern, replacement in _RENAMES:
            name = re.sub(pattern, replacement, name)
        if name.endswith("rel_pos.weight"):
            # the port allocates 2·max_positions − 1 entries but indexes around its span P: keep the 2P − 1 used
            used = 2 * config.attention_span - 1
            if used > tensor.numel():
                raise ValueError(f"HF model: chunk_size={config.chunk_size} exceeds max_positions="
                                 f"{hf_model.config.max_positions}; the port cannot run this configuration")
            tensor = tensor[:used]
        state[name] = tensor.detach().clone()
    encoder.load_state_dict(state, strict=True)
    return encoder.to(next(hf_model.parameters()).dtype)
