"""Timestep norm (cumulative statistics) and sequence group norm against plain loops and torch's group_norm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mega.megalodon.timestep_norm import SequenceGroupNorm, TimestepNorm


def make(kind, dim=12, groups=3):
    torch.manual_seed(0)
    norm = kind(dim, groups).double()
    with torch.no_grad():  # a non-trivial affine map (γ + 1, β)
        norm.weight.normal_(std=0.5)
        norm.bias.normal_(std=0.5)
    return norm


def loop(norm: TimestepNorm, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """y_t from µ_t, σ²_t over the real positions ≤ t and each group's features, one position at a time."""
    batch, length, dim = x.shape
    per_group = dim // norm.groups
    out = torch.zeros_like(x)
    for b in range(batch):
        for t in range(length):
            seen = x[b, : t + 1][mask[b, : t + 1]]  # [n, D]
            for g in range(norm.groups):
                features = slice(g * per_group, (g + 1) * per_group)
                values = seen[:, features]
                mean = values.mean() if values.numel() else x.new_zeros(())
                var = ((values - mean) ** 2).mean() if values.numel() else x.new_zeros(())
                normalized = (x[b, t, features] - mean) / torch.sqrt(var + norm.eps)
                out[b, t, features] = normalized * (norm.weight[features] + 1) + norm.bias[features]
    return out


def test_timestep_norm_equals_loop_over_time():
    norm = make(TimestepNorm)
    x = torch.randn(2, 9, 12, dtype=torch.float64) * 3 + 1
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :2] = False  # left padding: positions before the first real one
    mask[1, 6:] = False
    y, _ = norm(x, mask)
    expected = loop(norm, x, mask)
    real = mask.unsqueeze(-1).expand_as(x)
    assert (y - expected)[real].abs().max() <= 1e-10


@pytest.mark.parametrize("split", [1, 4, 8])
def test_timestep_norm_carries_its_statistics_across_chunks(split):
    norm = make(TimestepNorm)
    x = torch.randn(3, 9, 12, dtype=torch.float64)
    whole, final = norm(x)
    first, state = norm(x[:, :split])
    second, carried = norm(x[:, split:], state=state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    for a, b in zip(carried, final):
        torch.testing.assert_close(a, b)


def test_timestep_norm_is_causal():
    norm = make(TimestepNorm)
    x = torch.randn(2, 10, 12, dtype=torch.float64)
    later = x.clone()
    later[:, 6:] += 5.0
    torch.testing.assert_close(norm(later)[0][:, :6], norm(x)[0][:, :6])


def test_group_norm_equals_torch_group_norm():
    norm = make(SequenceGroupNorm)
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    expected = F.group_norm(x.transpose(1, 2), 3, norm.weight + 1, norm.bias, eps=norm.eps).transpose(1, 2)
    torch.testing.assert_close(norm(x), expected)
    # padded positions are left out of the statistics
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 5:] = False
    padded = x.clone()
    padded[0, 5:] = 50.0
    torch.testing.assert_close(norm(padded, mask)[0, :5], norm(x[:1, :5])[0])


@pytest.mark.parametrize("kind", [TimestepNorm, SequenceGroupNorm])
def test_gradients(kind):
    norm = make(kind, dim=6, groups=2)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])

    def output(x, *params):
        y = norm(x, mask)
        return y[0] if kind is TimestepNorm else y

    assert torch.autograd.gradcheck(output, (x, *norm.parameters()))


def test_groups_must_divide_the_features():
    with pytest.raises(ValueError, match="use a divisor of 12"):
        TimestepNorm(12, 5)
