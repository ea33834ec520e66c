"""activation_checkpointing=True: the same outputs and gradients (dropout on), less kept for the backward."""

from __future__ import annotations

import pytest
import torch

import mega
from mega import MegaConfig
from tests.conftest import TINY_MODEL

OPTIONS = dict(
    TINY_MODEL,
    vocab_size=30,
    num_hidden_layers=2,
    max_positions=48,
    relative_positional_bias="simple",
    dropout_prob=0.2,
    hidden_dropout_prob=0.2,
    attention_probs_dropout_prob=0.2,
    nffn_activation_dropout_prob=0.2,
)


def inputs(real: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = (
        torch.randn(3, 40, generator=generator)
        if real
        else torch.randint(1, 30, (3, 40), generator=generator)
    )
    mask = torch.ones(3, 40, dtype=torch.bool)
    mask[1, 29:] = False  # padding in one sample
    return x, mask


def step(net: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, seed: int, bf16: bool = False):
    """Outputs and the gradients of every parameter (and of real-valued inputs) after one backward."""
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(x.is_floating_point())
    torch.manual_seed(seed)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = net(x, mask)
    (out.float() ** 2).mean().backward()
    grads = [p.grad for p in net.parameters()] + ([x.grad] if x.is_floating_point() else [])
    return out, grads


def pair(build, **options) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights with checkpointing off and on, in training mode."""
    torch.manual_seed(0)
    plain = build(**options).train()
    torch.manual_seed(0)
    checkpointed = build(**options, activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def assert_same_step(plain, checkpointed, x, mask, bf16: bool = False) -> None:
    out, grads = step(plain, x, mask, seed=1, bf16=bf16)
    out_ckpt, grads_ckpt = step(checkpointed, x, mask, seed=1, bf16=bf16)
    torch.testing.assert_close(out_ckpt, out, rtol=0, atol=0)
    assert len(grads) == len(grads_ckpt) and all(g is not None for g in grads)
    for got, expected in zip(grads_ckpt, grads):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # the dropout is on: another seed gives other gradients, so equal ones above are the RNG's replay
    _, other = step(checkpointed, x, mask, seed=2, bf16=bf16)
    assert any(not torch.equal(a, b) for a, b in zip(other, grads))


@pytest.mark.parametrize("chunk_size", [-1, 8])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("real", [False, True])
def test_mega_gradients_equal_the_plain_run(chunk_size: int, bf16: bool, real: bool) -> None:
    options = dict(OPTIONS, chunk_size=chunk_size, input_kind="real" if real else "tokens")
    plain, checkpointed = pair(mega.MegaForSequenceClassification, **options)
    assert_same_step(plain, checkpointed, *inputs(real), bf16=bf16)


def test_batchnorm_running_statistics_are_updated_once() -> None:
    """The backward's rerun of a layer must not update BatchNorm's running mean and variance again."""
    plain, checkpointed = pair(mega.MegaForSequenceClassification, **OPTIONS, normalization_type="batchnorm")
    for net in (plain, checkpointed):
        step(net, *inputs(), seed=1)
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    "build,options",
    [
        (
            mega.MegalodonForSequenceClassification,
            dict(norm_num_groups=4, hidden_dropout_prob=0.2, chunk_size=8),
        ),
        (
            mega.TransformerForSequenceClassification,
            dict(num_attention_heads=2, attention_probs_dropout_prob=0.2),
        ),
    ],
    ids=["megalodon", "transformer"],
)
def test_other_families_gradients_equal_the_plain_run(build, options) -> None:
    sizes = {k: OPTIONS[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")}
    plain, checkpointed = pair(build, **sizes, **options, dropout_prob=0.2)
    assert_same_step(plain, checkpointed, *inputs())


def saved_bytes(net: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> int:
    """Bytes the forward leaves in the autograd graph for the backward (a checkpointed layer: its inputs only).

    Counted in the forward alone: the backward's rerun of a checkpointed layer saves again, transiently."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = net(x, mask).sum()
    loss.backward()
    return total


def test_checkpointing_keeps_only_each_layers_input_for_the_backward() -> None:
    x, mask = inputs()
    kept = {}
    for layers in (2, 4):
        plain, checkpointed = pair(
            mega.MegaForSequenceClassification, **dict(OPTIONS, num_hidden_layers=layers)
        )
        kept[layers] = saved_bytes(plain, x, mask), saved_bytes(checkpointed, x, mask)
    layer_input = x.numel() * OPTIONS["hidden_size"] * 4  # one [B, L, D] float32
    plain_per_layer, checkpointed_per_layer = ((kept[4][i] - kept[2][i]) / 2 / layer_input for i in (0, 1))
    assert checkpointed_per_layer <= 1.1  # its input, and the bool mask
    assert plain_per_layer > 5 * checkpointed_per_layer
    # eval and no_grad run the layers plainly (nothing to keep)
    checkpointed.eval()
    with torch.no_grad():
        torch.testing.assert_close(checkpointed(x, mask), plain.eval()(x, mask))


def test_the_option_is_type_checked() -> None:
    with pytest.raises(TypeError, match="activation_checkpointing='yes' has type str; expected bool"):
        MegaConfig(activation_checkpointing="yes")


def test_incremental_decoding_cache_is_refused_in_training_and_generate_works() -> None:
    options = dict(OPTIONS, is_decoder=True, bidirectional=False, activation_checkpointing=True)
    torch.manual_seed(0)
    lm = mega.MegaForCausalLM(**options).train()
    prompt = torch.randint(1, 30, (2, 5))
    with pytest.raises(ValueError, match="activation_checkpointing=True .* cache"):
        lm(prompt, cache=mega.DecoderCache())
    lm.eval()
    plain = mega.MegaForCausalLM(**dict(options, activation_checkpointing=False)).eval()
    plain.load_state_dict(lm.state_dict())
    torch.testing.assert_close(lm.generate(prompt, 4), plain.generate(prompt, 4))


@pytest.mark.slow
def test_compiled_checkpointed_model_has_the_eager_gradients() -> None:
    """torch.compile traces the checkpointed layers (about 40 s here). Without dropout: the compiled graph draws
    dropout masks from its own RNG stream, so with dropout compiled and eager steps differ anyway."""
    no_dropout = {k: 0.0 for k in mega.config.DROPOUT_OPTIONS if k in OPTIONS}
    plain, checkpointed = pair(mega.MegaForSequenceClassification, **{**OPTIONS, **no_dropout}, chunk_size=8)
    checkpointed.compile()
    x, mask = inputs()
    out, grads = step(plain, x, mask, seed=1)
    out_compiled, grads_compiled = step(checkpointed, x, mask, seed=1)
    torch.testing.assert_close(out_compiled, out)
    for got, expected in zip(grads_compiled, grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
