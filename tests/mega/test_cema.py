"""CEMA: the FFT convolution against its recurrence and a plain complex-arithmetic loop, both variants."""

from __future__ import annotations

import math

import pytest
import torch

from mega.megalodon.cema import ComplexEMA

PAPER = {}
CODE = {"input_phase": False, "input_expansion": False, "base_angle": "sigmoid", "skip": True}


def make_cema(dim=5, ndim=4, bidirectional=False, truncation=None, dtype=torch.float64, **variant):
    torch.manual_seed(0)
    cema = ComplexEMA(dim, ndim, bidirectional, truncation, **variant).to(dtype)
    cema.reset_parameters(alpha_delta_std=1.0, beta_std=0.5)  # a wide spread of decays, some close to 1
    with torch.no_grad():
        cema.eta[..., 1].normal_()  # complex η (zero imaginary part at initialisation)
        cema.angle.mul_(3.0)  # angles up to several turns per period
    return cema


def loop(cema: ComplexEMA, x: torch.Tensor, rows: slice) -> torch.Tensor:
    """h_t = α e^{iθ} β x_t + (1 − αδ) e^{iθ} h_{t−1}, y_t = Re(ηᵀ h_t)/√h, from the raw parameters, step by step."""
    alpha, delta = torch.sigmoid(cema.alpha[rows]), torch.sigmoid(cema.delta[rows])  # [D, h]
    base = cema.angle[rows] if cema.base_angle == "free" else torch.sigmoid(cema.angle[rows])
    theta = base * torch.arange(1, cema.ndim + 1, dtype=x.dtype) * 2 * math.pi / cema.ndim
    rotation = torch.cos(theta) + 1j * torch.sin(theta)
    beta = 1.0 if cema.beta is None else cema.beta[rows]
    input_weight = alpha * beta * (rotation if cema.input_phase else 1.0)
    decay = (1 - alpha * delta) * rotation
    eta = torch.view_as_complex(cema.eta[rows].contiguous())
    h = torch.zeros(x.size(0), *alpha.shape, dtype=rotation.dtype)
    out = []
    for t in range(x.size(1)):
        h = input_weight * x[:, t, :, None] + decay * h
        out.append((eta * h).sum(-1).real / math.sqrt(cema.ndim))
    return torch.stack(out, 1)


def expected(cema: ComplexEMA, x: torch.Tensor) -> torch.Tensor:
    dim = cema.dim
    y = loop(cema, x, slice(0, dim))
    if cema.bidirectional:
        y = y + loop(cema, x.flip(1), slice(dim, 2 * dim)).flip(1)
    if cema.omega is not None:
        y = y + cema.omega * x
    return y


@pytest.mark.parametrize("variant", [PAPER, CODE], ids=["paper", "code"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_path_equals_complex_loop(variant, bidirectional):
    cema = make_cema(bidirectional=bidirectional, **variant)
    x = torch.randn(2, 37, 5, dtype=torch.float64)
    with torch.no_grad():
        assert (cema(x) - expected(cema, x)).abs().max() <= 1e-6


@pytest.mark.parametrize("variant", [PAPER, CODE], ids=["paper", "code"])
def test_recurrence_equals_fft_path_and_carries_the_state(variant):
    cema = make_cema(**variant)
    x = torch.randn(2, 41, 5, dtype=torch.float64)
    with torch.no_grad():
        full = cema(x)
        for blocks in ([1] * 41, [5, 1, 9, 3, 23], [20, 21]):
            state, outputs, start = None, [], 0
            for size in blocks:
                y, state = cema.step(x[:, start : start + size], state)
                outputs.append(y)
                start += size
            assert (torch.cat(outputs, 1) - full).abs().max() <= 1e-6


def test_float32_kernel_and_recurrence_agree():
    cema = make_cema(dtype=torch.float32)
    x = torch.randn(3, 200, 5)
    with torch.no_grad():
        state, outputs = None, []
        for t in range(x.size(1)):
            y, state = cema.step(x[:, t : t + 1], state)
            outputs.append(y)
        stepped, convolved = torch.cat(outputs, 1), cema(x)
        exact = expected(cema.double(), x.double())
    assert (convolved - stepped).abs().max() <= 1e-5
    assert (convolved.double() - exact).abs().max() <= 1e-5


def test_truncation_keeps_the_first_lags():
    cema = make_cema(truncation=6)
    x = torch.zeros(1, 20, 5, dtype=torch.float64)
    x[0, 0] = 1.0  # an impulse: the output is the kernel
    with torch.no_grad():
        response = cema(x)[0].T  # [D, L]
        untruncated = make_cema()(x)[0].T
    assert response[:, 6:].abs().max() <= 1e-12  # FFT round-off only
    torch.testing.assert_close(response[:, :6], untruncated[:, :6])


def test_padding_is_not_read():
    cema = make_cema(bidirectional=True)
    x = torch.randn(1, 12, 5, dtype=torch.float64)
    mask = torch.ones(1, 12, dtype=torch.bool)
    mask[0, 9:] = False
    noisy = x.clone()
    noisy[0, 9:] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(cema(noisy, mask)[:, :9], cema(x[:, :9]))


@pytest.mark.parametrize("variant", [PAPER, CODE], ids=["paper", "code"])
def test_gradients_equal_those_of_the_loop(variant):
    cema = make_cema(bidirectional=True, truncation=None, **variant)
    x = torch.randn(2, 9, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 9, 5, dtype=torch.float64)
    params = [p for p in cema.parameters()]
    fast = torch.autograd.grad((cema(x) * weights).sum(), [x, *params])
    plain = torch.autograd.grad((expected(cema, x) * weights).sum(), [x, *params])
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_autocast_keeps_the_kernel_in_float32():
    cema = make_cema(dtype=torch.float32)
    x = torch.randn(2, 64, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = cema(x.bfloat16())
    assert y.dtype == torch.bfloat16
    assert (y.float() - cema(x)).abs().max() <= 0.05 * cema(x).abs().max()


def test_bidirectional_cema_has_no_recurrent_form():
    cema = make_cema(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional=False"):
        cema.step(torch.randn(1, 3, 5, dtype=torch.float64), None)
