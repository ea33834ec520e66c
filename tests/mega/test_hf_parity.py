"""Parity with the Hugging Face port: from_transformers(hf) reproduces MegaModel.last_hidden_state (eval, fp32)."""

from __future__ import annotations

import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

from mega import MegaEncoder, from_transformers  # noqa: E402
from mega.hf import config_from_transformers  # noqa: E402

TOLERANCE = 1e-5

# every HF option value the parity grid must cover (syncbatchnorm needs GPUs/distributed: not a CPU norm)
GRID = {
    "bidirectional": [True, False],
    "chunking": [None, 4, 8],  # None: use_chunking=False
    "relative_positional_bias": ["simple", "rotary"],
    "attention_activation": ["softmax", "laplace", "relu2"],
    "normalization_type": ["scalenorm", "layernorm", "rmsnorm", "batchnorm"],
    "normalize_before_mega": [True, False],
    "use_normalized_ffn": [True, False],
    "normalize_before_ffn": [True, False],
    "norm_affine": [True, False],
    "activation": ["silu", "relu", "linear", "gelu", "gelu_accurate"],
    "truncation": [None, 5],
    "add_token_type_embeddings": [True, False],
}


def grid_cases(count: int, seed: int) -> list[dict]:
    """count seeded cases in which every value of every option appears (shuffled repetitions per option)."""
    rng = random.Random(seed)
    columns = {}
    for option, values in GRID.items():
        column = (values * (count // len(values) + 1))[:count]
        rng.shuffle(column)
        columns[option] = column
    return [{option: columns[option][i] for option in GRID} for i in range(count)]


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights (HF's init leaves most biases zero and norms at 1) and BatchNorm running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif "norm" in name and name.endswith(("weight", "scalar")):
                tensor.copy_(1.0 + 0.2 * noise)
            elif "ema_gate" in name:
                continue  # keep the EMA's official init (decays in (0, 1), unit-scale projections)
            else:
                tensor.copy_(0.1 * noise)


def hf_model(case: dict, seed: int, dims: dict) -> torch.nn.Module:
    chunk = case["chunking"]
    hf_config = transformers.MegaConfig(
        vocab_size=37,
        max_positions=64,
        type_vocab_size=3,
        use_chunking=chunk is not None,
        chunk_size=chunk if chunk is not None else -1,
        **dims,
        **{k: v for k, v in case.items() if k != "chunking"},
    )
    torch.manual_seed(seed)
    model = transformers.MegaModel(hf_config, add_pooling_layer=False).eval()
    randomize_(model, seed)
    return model


def inputs(case: dict, seed: int, batch: int = 3):
    generator = torch.Generator().manual_seed(seed)
    chunk = case["chunking"]
    seq_len = 16 if chunk is None else random.Random(seed).choice([2 * chunk, 3 * chunk, chunk - 2])
    ids = torch.randint(0, 37, (batch, seq_len), generator=generator)
    lengths = [seq_len, max(1, seq_len - 5), 3][:batch]  # the last row leaves whole chunks of padding
    mask = (torch.arange(seq_len) < torch.tensor(lengths).unsqueeze(1)).long()
    types = None
    if case["add_token_type_embeddings"] and seed % 2:
        types = torch.randint(0, 3, (batch, seq_len), generator=generator)
    return ids, mask, types


def max_diff(hf: torch.nn.Module, ours: torch.nn.Module, ids, mask, types) -> float:
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    return (got - expected).abs().max().item()


SMALL = dict(
    hidden_size=16,
    num_hidden_layers=2,
    intermediate_size=24,
    ema_projection_size=4,
    shared_representation_size=8,
    nffn_hidden_size=20,
)


def run_case(case: dict, seed: int, dims: dict) -> float:
    if case["normalization_type"] == "layernorm" and not case["norm_affine"]:
        return run_layernorm_without_affine(case, seed, dims)
    hf = hf_model(case, seed, dims)
    ours = from_transformers(hf).eval()
    return max_diff(hf, ours, *inputs(case, seed))


def run_layernorm_without_affine(case: dict, seed: int, dims: dict) -> float:
    """HF crashes building layernorm with norm_affine=False; compare with HF's affine LayerNorm held at (1, 0)."""
    hf = hf_model({**case, "norm_affine": True}, seed, dims)
    with torch.no_grad():
        for name, tensor in hf.named_parameters():
            if ".norm.norm." in name:
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
    converted = from_transformers(hf)
    config = config_from_transformers(hf.config)
    config.norm_affine = False
    ours = MegaEncoder(config).eval()
    missing, unexpected = ours.load_state_dict(converted.state_dict(), strict=False)
    assert not missing and all(".norm." in name for name in unexpected)
    return max_diff(hf, ours, *inputs(case, seed))


CASES = grid_cases(20, seed=2026)


def test_grid_covers_every_option_value():
    for option, values in GRID.items():
        assert {case[option] for case in CASES} == set(values), option


@pytest.mark.parametrize("index", range(len(CASES)))
def test_parity_grid(index: int):
    assert run_case(CASES[index], seed=index, dims=SMALL) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("index", range(64))
def test_parity_grid_large(index: int):
    case = grid_cases(64, seed=7)[index]
    dims = dict(
        hidden_size=64,
        num_hidden_layers=4,
        intermediate_size=96,
        ema_projection_size=16,
        shared_representation_size=32,
        nffn_hidden_size=80,
    )
    assert run_case(case, seed=1000 + index, dims=dims) <= TOLERANCE


def test_converted_config_switches():
    hf = hf_model({**CASES[0], "normalization_type": "rmsnorm", "norm_affine": True}, 0, SMALL)
    config = from_transformers(hf).config
    assert config.final_norm is False and config.mask_padded_states is False
    assert config.embedding_dropout is False and config.rmsnorm_discards_normalization is True


@pytest.mark.parametrize("function", ["softmax", "laplace", "relu2"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_parity_causal_decoder(function: str, chunk):
    case = dict(GRID_DEFAULT, bidirectional=False, chunking=chunk, attention_activation=function)
    hf = hf_model(case, 3, SMALL)
    hf.config.is_decoder = True
    ours = from_transformers(hf).eval()
    assert ours.config.is_decoder
    ids, mask, _ = inputs(case, 3)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, use_cache=False).last_hidden_state
        assert (ours(ids, attention_mask=mask) - expected).abs().max().item() <= TOLERANCE


GRID_DEFAULT = {option: values[0] for option, values in GRID.items()}
