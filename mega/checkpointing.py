"""Activation checkpointing of a layer: keep only its inputs for the backward, which reruns the layer to get the rest.

Memory per layer falls from its activations to its input [B, L, D]; the cost is a second forward of each layer in
the backward. torch.utils.checkpoint (non-reentrant) restores the forward's RNG state and autocast state for the
rerun, so dropout masks (and the attention's dropout seed, drawn from the global RNG) are the same and the
gradients equal those of the plain run. The rerun does not update BatchNorm running statistics a second time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def checkpointing_active(enabled: bool, module: nn.Module) -> bool:
    """Whether a layer of `module` runs checkpointed: the option is on, in training, with grad enabled."""
    return enabled and module.training and torch.is_grad_enabled()


def run_layer(layer: nn.Module, enabled: bool, *args: Any, **kwargs: Any) -> Any:
    """layer(*args, **kwargs), through torch.utils.checkpoint when `checkpointing_active(enabled, layer)`."""
    if not checkpointing_active(enabled, layer):
        return layer(*args, **kwargs)
    return checkpoint(
        _FirstRunUpdatesStatistics(layer), *args, use_reentrant=False, preserve_rng_state=True, **kwargs
    )


class _FirstRunUpdatesStatistics:
    """Calls the layer; every call after the first (the backward's rerun) leaves running statistics as they were."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            return self.layer(*args, **kwargs)
        with _running_statistics_kept(self.layer):
            return self.layer(*args, **kwargs)


@contextlib.contextmanager
def _running_statistics_kept(layer: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm buffers (running mean/var, batch count) on exit, also when the rerun stops early."""
    buffers = [
        buffer
        for module in layer.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for buffer in (module.running_mean, module.running_var, module.num_batches_tracked)
        if buffer is not None
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
