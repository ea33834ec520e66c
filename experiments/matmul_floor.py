"""The matmul floor of a step: the time its matrix products alone take, replayed with the same shapes.

`record_matmuls(step)` runs `step()` once under a TorchDispatchMode that notes every matrix product the forward and
backward dispatch (mm, addmm, bmm, baddbmm and their in-place forms, whatever module or function called them), with
its operand shapes, strides and dtypes. `replay_seconds(calls, repeats)` then runs each distinct product on random
operands of that layout, once per repeat, and returns the median over repeats of Σ count × time: what the step would
cost if it did nothing but its matmuls (output allocation included, as in the step). Same process, same threads.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
MATMULS = {aten.mm, aten.addmm, aten.addmm_, aten.bmm, aten.baddbmm, aten.baddbmm_, aten.addbmm}

# one product: (op, ((shape, stride, dtype) or a constant, per argument), keyword arguments as a tuple)
Call = tuple[Any, tuple[Any, ...], tuple[tuple[str, Any], ...]]


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[Call] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in MATMULS:
            layout = tuple(
                (tuple(a.shape), a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args
            )
            self.calls[(func, layout, tuple(sorted(kwargs.items())))] += 1
        return func(*args, **kwargs)


def record_matmuls(step: Callable[[], Any]) -> Counter[Call]:
    """Run step() once; → how often each matrix product (op and operand layout) was called."""
    recorder = _Recorder()
    with recorder:
        step()
    return recorder.calls


def _operand(spec: Any, device: torch.device) -> Any:
    if not (isinstance(spec, tuple) and len(spec) == 3 and isinstance(spec[2], torch.dtype)):
        return spec
    shape, stride, dtype = spec
    # random values in a storage of the recorded layout (which may repeat elements: stride 0 of an expand)
    extent = 1 + sum((size - 1) * step for size, step in zip(shape, stride)) if all(shape) else 0
    return torch.randn(extent, dtype=dtype, device=device).as_strided(shape, stride)


def replay_seconds(calls: Counter[Call], repeats: int = 3, device: torch.device | str = "cpu") -> float:
    """Median over `repeats` rounds of Σ count × time of one call of each recorded product (see the module doc)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rounds = []
    for _ in range(repeats):
        total = 0.0
        for (func, layout, kwargs), count in calls.items():
            args = [_operand(spec, device) for spec in layout]
            sync()
            start = time.perf_counter()
            func(*args, **dict(kwargs))
            sync()
            total += count * (time.perf_counter() - start)
            del args
        rounds.append(total)
    return statistics.median(rounds)
