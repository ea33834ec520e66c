"""Conversion from Hugging Face `transformers` MEGA models (the port) and checkpoint folders to ours.

MegaModel → MegaEncoder, MegaForCausalLM → mega.MegaForCausalLM, MegaForMaskedLM → mega.MegaForMaskedLM, with
the same weights. The converted model reproduces the port, deviations included (see README "Model"): no final
norm, no embedding dropout, padded positions not zeroed, the port's RMSNorm, the simple bias sized by
max_positions. `transformers` is never imported: conversion reads a config dict and a state dict, so
`load_pretrained(folder)` works without it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from mega.config import MegaConfig
from mega.encoder import MegaEncoder
from mega.lm import MegaForCausalLM, MegaForMaskedLM

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


# HF architecture → (our class, prefix of the encoder's weights in the HF state dict)
ARCHITECTURES = {
    "MegaModel": (MegaEncoder, ""),
    "MegaForCausalLM": (MegaForCausalLM, "mega."),
    "MegaForMaskedLM": (MegaForMaskedLM, "mega."),
}
_HEAD_RENAMES = [(r"^dense\.", "head.dense."), (r"^(lm|mlm)_head\.", "head.out.")]


def config_from_transformers(hf_config) -> MegaConfig:
    """Our MegaConfig for an HF MegaConfig, with the switches that reproduce the port."""
    return config_from_dict(hf_config.to_dict())


def config_from_dict(hf_values: Mapping) -> MegaConfig:
    """Our MegaConfig for an HF config dict (config.json), with the switches that reproduce the port."""
    names = {f.name for f in dataclasses.fields(MegaConfig)}
    values = {k: v for k, v in hf_values.items() if k in names}
    use_chunking = bool(hf_values.get("use_chunking", False))
    values.update(
        final_norm=False,
        mask_padded_states=False,
        embedding_dropout=False,
        rmsnorm_discards_normalization=True,
        use_chunking=use_chunking,
    )
    if not use_chunking and values.get("chunk_size", -1) > 0:
        values["max_positions"] = values["chunk_size"]  # the port sizes its bias by chunk_size even then
    return MegaConfig(**values)


def _hf_bias_span(hf_values: Mapping) -> int:
    """P around which the port indexes every simple bias (self- and cross-attention): chunk_size if ≥ 0."""
    chunk_size = hf_values.get("chunk_size", -1)
    return chunk_size if chunk_size >= 0 else hf_values.get("max_positions", 2048)


def _recentre_bias(tensor: torch.Tensor, hf_span: int, span: int) -> torch.Tensor:
    """The port's w[hf_span − 1 + d] (allocated with 2·max_positions − 1 entries) as our w'[span − 1 + d].

    Offsets |d| ≥ hf_span, out of the port's reach (it raises there), get a zero bias.
    """
    if 2 * hf_span - 1 > tensor.numel():
        raise ValueError(
            f"HF model: chunk_size={hf_span} exceeds max_positions={(tensor.numel() + 1) // 2}; "
            "the port cannot run this configuration"
        )
    used = tensor[: 2 * hf_span - 1]
    if span == hf_span:
        return used
    out = tensor.new_zeros(2 * span - 1)
    reach = min(span, hf_span)
    out[span - reach : span + reach - 1] = used[hf_span - reach : hf_span + reach - 1]
    return out


def from_transformers(hf_model) -> nn.Module:
    """Our model computing what `hf_model` (a transformers MegaModel, MegaForCausalLM or MegaForMaskedLM)
    computes, with its weights copied."""
    architecture = type(hf_model).__name__
    model = convert(architecture, hf_model.config.to_dict(), hf_model.state_dict(), f"HF {architecture}")
    return model.to(next(hf_model.parameters()).dtype).train(hf_model.training)


def convert(
    architecture: str, hf_config: Mapping, hf_state: Mapping[str, torch.Tensor], source: str
) -> nn.Module:
    """Build our model for an HF architecture name, config dict and state dict (`source` names them in errors)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"{source}: architecture {architecture!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    model_class, prefix = ARCHITECTURES[architecture]
    config = config_from_dict(hf_config)
    model = model_class(config)
    hf_span = _hf_bias_span(hf_config)
    state, origin, unexpected = {}, {}, []
    for hf_name, tensor in hf_state.items():
        if _SKIPPED.search(hf_name.removeprefix(prefix)):
            continue
        name = _our_name(hf_name, prefix)
        if name is None:
            unexpected.append(hf_name)
            continue
        if name.endswith("cross_attn.rel_pos.weight"):
            tensor = _recentre_bias(tensor, hf_span, config.max_positions)
        elif name.endswith("rel_pos.weight"):
            tensor = _recentre_bias(tensor, hf_span, config.attention_span)
        state[name], origin[name] = tensor.detach().clone(), hf_name
    expected = model.state_dict()
    if getattr(model, "head", None) is not None and config.tie_word_embeddings:
        state.pop(
            "head.out.weight", None
        )  # the same matrix as the token embedding (only .bin files store both)
        if "encoder.embed.tokens.weight" in state:
            state["head.out.weight"] = state["encoder.embed.tokens.weight"]
    unexpected += [origin[name] for name in state if name not in expected]
    missing = [name for name in expected if name not in state]
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match a {architecture} with this config.json: "
            f"missing weights (our names): {missing or 'none'}; "
            f"unexpected keys (checkpoint names): {unexpected or 'none'}"
        )
    model.load_state_dict(state, strict=True)
    return model


def _our_name(hf_name: str, prefix: str) -> str | None:
    """Our state-dict name for an HF one; None when it belongs to nothing we know."""
    if prefix and not hf_name.startswith(prefix):
        for pattern, replacement in _HEAD_RENAMES:
            if re.search(pattern, hf_name):
                return re.sub(pattern, replacement, hf_name)
        return None
    name = hf_name[len(prefix) :]
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return ("encoder." + name) if prefix else name


def load_pretrained(path: str | Path) -> nn.Module:
    """Load a Hugging Face MEGA checkpoint folder (config.json + model.safetensors or pytorch_model.bin, or
    their sharded index) as our model in eval mode, without `transformers`."""
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: a Hugging Face checkpoint folder holds config.json "
            "next to model.safetensors or pytorch_model.bin"
        )
    try:
        hf_config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file}: not valid JSON ({error})") from error
    architectures = hf_config.get("architectures") or ["MegaModel"]
    if hf_config.get("model_type") != "mega":
        raise ValueError(
            f"{config_file}: not a MEGA checkpoint (model_type={hf_config.get('model_type')!r}, "
            f"architectures={architectures}); expected model_type 'mega'"
        )
    weights_file, state = _read_weights(folder)
    model = convert(architectures[0], hf_config, state, str(weights_file))
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    return model.to(floating[0] if floating else torch.float32).eval()


def _read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        index = folder / f"{name}.index.json"
        files = [folder / name]
        if index.is_file():
            files = [
                folder / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))
            ]
        if all(file.is_file() for file in files):
            state = {}
            for file in files:
                state.update(_read_weight_file(file))
            return (index if index.is_file() else files[0]), state
    raise FileNotFoundError(
        f"{folder}: no weights found; expected model.safetensors or pytorch_model.bin "
        "(or a sharded *.index.json) next to config.json"
    )


def _read_weight_file(file: Path) -> dict[str, torch.Tensor]:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(file)
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors and torch raise several types for a corrupt file
        raise ValueError(
            f"{file}: cannot be read as a weights file ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, Mapping) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise ValueError(f"{file}: not a state dict of tensors")
    return dict(state)
