"""The CPU dropout: drop rate, scaling and gradient."""

from __future__ import annotations

import torch

from mega.dropout import Dropout, kept_fraction


def test_drop_rate_scale_and_gradient():
    torch.manual_seed(0)
    layer = Dropout(0.1).train()
    x = torch.ones(200_000, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / kept_fraction(0.1)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d(sum)/dx = keep / (1 − p) = y for x = 1
    assert abs(kept_fraction(0.1) - 0.9) < 1e-5


def test_eval_and_zero_rate_are_identity():
    x = torch.randn(5, 7)
    assert Dropout(0.3).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
