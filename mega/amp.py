"""Autocast (mixed precision) for our custom autograd functions, on whatever device their inputs live.

`torch.amp.custom_fwd`/`custom_bwd` need the device type when the class is defined; the same functions run on
CPU and CUDA, so these decorators read it from the first tensor argument instead. Otherwise they behave the same:
the forward records the autocast state it ran under, the backward runs under that state again (autograd calls it
outside any autocast region), so recomputations in the backward see the dtypes the forward saw.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch


def _device_type(args: tuple[Any, ...]) -> str:
    return next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def custom_fwd(forward: Callable | None = None, *, cast_inputs: torch.dtype | None = None) -> Callable:
    """Decorate `forward(ctx, *args)` of an autograd Function.

    cast_inputs=None: the forward runs under the caller's autocast state (recorded for the backward).
    cast_inputs=dtype: under autocast, floating-point tensor arguments are cast to dtype and the forward (and
    then the backward) runs with autocast off, e.g. float32 for a part that must not run in half precision.
    """
    if forward is None:
        return functools.partial(custom_fwd, cast_inputs=cast_inputs)

    @functools.wraps(forward)
    def wrapped(ctx, *args):
        device = _device_type(args)
        enabled = torch.is_autocast_enabled(device)
        ctx.autocast_device, ctx.autocast_dtype = device, torch.get_autocast_dtype(device)
        ctx.autocast_enabled = enabled and cast_inputs is None
        if not enabled or cast_inputs is None:
            return forward(ctx, *args)
        with torch.autocast(device, enabled=False):
            return forward(ctx, *(_cast(a, cast_inputs) for a in args))

    return wrapped


def custom_bwd(backward: Callable) -> Callable:
    """Decorate `backward(ctx, *grads)` of an autograd Function whose forward has `custom_fwd`."""

    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        with torch.autocast(ctx.autocast_device, ctx.autocast_dtype, enabled=ctx.autocast_enabled):
            return backward(ctx, *grads)

    return wrapped
