"""The EMA's recurrent form (used for incremental decoding) equals its causal FFT convolution."""

import pytest
import torch

from mega.ema import MultiHeadEMA


def causal_ema(dim=6, ndim=4, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    ema = MultiHeadEMA(dim, ndim, bidirectional=False).to(dtype)
    ema.reset_parameters(delta_alpha_std=1.0, beta_std=0.5)  # a wide spread of decays, some close to 1
    return ema


def convolution(ema, x):
    return ema.convolve(x, ema.kernel(x.size(1)))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_token_by_token_recurrence_equals_convolution(dtype, tol):
    ema = causal_ema(dtype=dtype)
    x = torch.randn(3, 41, 6, dtype=dtype)
    state, outputs = None, []
    for t in range(x.size(1)):
        y, state = ema.step(x[:, t : t + 1], state)
        outputs.append(y)
    assert (torch.cat(outputs, 1) - convolution(ema, x)).abs().max() <= tol


@pytest.mark.parametrize("blocks", [[41], [5, 1, 9, 3, 23], [1, 40], [20, 21]])
def test_block_steps_equal_convolution_and_carry_the_state(blocks):
    ema = causal_ema()
    x = torch.randn(2, 41, 6, dtype=torch.float64)
    state, outputs, start = None, [], 0
    for size in blocks:
        y, state = ema.step(x[:, start : start + size], state)
        outputs.append(y)
        start += size
    assert (torch.cat(outputs, 1) - convolution(ema, x)).abs().max() <= 1e-12
    # the state after the blocks is h_L of the recurrence h_t = pβ x_t + q h_{t−1}
    p, q = ema.coefficients()
    h = torch.zeros(2, 6, 4, dtype=torch.float64)
    for t in range(41):
        h = (p * ema.beta).squeeze(-1) * x[:, t, :, None] + q.squeeze(-1) * h
    assert (state - h).abs().max() <= 1e-12


def test_forward_with_cache_equals_forward_on_the_whole_sequence():
    from mega.cache import LayerCache

    ema = causal_ema(dtype=torch.float32)
    x = torch.randn(2, 12, 6)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :3] = False  # left padding: zero inputs leave the state at zero
    cache = LayerCache()
    stepped = torch.cat(
        [ema(x[:, :5], mask[:, :5], cache=cache)]
        + [ema(x[:, t : t + 1], mask[:, t : t + 1], cache=cache) for t in range(5, 12)],
        dim=1,
    )
    assert (stepped - ema(x, mask)).abs().max() <= 1e-5


def test_bidirectional_ema_has_no_recurrent_form():
    ema = MultiHeadEMA(4, 2, bidirectional=True)
    ema.reset_parameters()
    with pytest.raises(ValueError, match="bidirectional=False"):
        ema.step(torch.randn(1, 3, 4), None)
