"""Activations by name (MegaConfig.activation) and the element-wise attention functions."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def laplace(x: torch.Tensor, mu: float = 0.707107, sigma: float = 0.282095) -> torch.Tensor:
    """laplace(s) = ½ (1 + erf((s − μ) / (σ √2))), the reference's rounded constants."""
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def relu2(x: torch.Tensor) -> torch.Tensor:
    """relu2(s) = max(s, 0)²."""
    return torch.square(F.relu(x))


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def gelu_accurate(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "relu": F.relu,
    "linear": identity,
    "gelu": F.gelu,
    "gelu_accurate": gelu_accurate,
}
