"""EMA: fast kernel and FFT convolution against the plain recurrence."""

from __future__ import annotations

import pytest
import torch

from mega.ema import MultiHeadEMA, fast_fft_length


def make_ema(dim: int, ndim: int, bidirectional: bool, truncation: int | None) -> MultiHeadEMA:
    torch.manual_seed(0)
    ema = MultiHeadEMA(dim, ndim, bidirectional, truncation).double()
    ema.reset_parameters()
    return ema


def naive_kernel(ema: MultiHeadEMA, length: int) -> torch.Tensor:
    p, q = ema.coefficients()
    powers = q ** torch.arange(length, dtype=q.dtype)  # [K, N, length]
    return torch.einsum("kn,knl->kl", ema.gamma * ema.scale, p * ema.beta * powers)


def recurrence(ema: MultiHeadEMA, x: torch.Tensor, rows: slice, taps: int) -> torch.Tensor:
    """y[t] = Σ_{j<taps} k[j] x[t−j] computed directly from the state recurrence, truncated to taps lags."""
    kernel = naive_kernel(ema, taps)[rows]  # [D, taps]
    out = torch.zeros_like(x)
    for t in range(x.size(1)):
        for j in range(min(taps, t + 1)):
            out[:, t] += kernel[:, j] * x[:, t - j]
    return out


def test_kernel_matches_powers():
    ema = make_ema(6, 5, True, None)
    for length in (1, 2, 17, 64, 300):
        torch.testing.assert_close(ema.kernel(length), naive_kernel(ema, length), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("truncation", [None, 4])
def test_convolution_matches_recurrence(bidirectional: bool, truncation: int | None):
    ema = make_ema(3, 4, bidirectional, truncation)
    x = torch.randn(2, 11, 3, dtype=torch.double)
    taps = ema.kernel_length(11)
    y = ema.convolve(x, ema.kernel(taps))
    expected = recurrence(ema, x, slice(0, 3), taps)
    if bidirectional:
        expected = expected + recurrence(ema, x.flip(1), slice(3, 6), taps).flip(1)
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-10)


def test_forward_masks_input_and_adds_skip():
    ema = make_ema(3, 2, True, None)
    x = torch.randn(2, 7, 3, dtype=torch.double)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    y = ema(x, mask)
    x_masked = x * mask.unsqueeze(-1)
    expected = torch.nn.functional.silu(ema.convolve(x_masked, ema.kernel(7)) + ema.omega * x)
    torch.testing.assert_close(y, expected)


def test_fast_fft_length_is_smallest_smooth_number():
    def smooth(n: int) -> bool:
        for factor in (2, 3, 5):
            while n % factor == 0:
                n //= factor
        return n == 1

    for n in range(1, 400):
        expected = next(m for m in range(n, 4 * n + 1) if smooth(m))
        assert fast_fft_length(n) == expected
    assert fast_fft_length(8191) == 8192


@pytest.mark.parametrize("bidirectional", [True, False])
def test_convolution_gradients(bidirectional: bool):
    ema = make_ema(3, 2, bidirectional, 5)
    x = torch.randn(2, 9, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *params: ema(x), (x, *ema.parameters()))
