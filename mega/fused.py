"""Element-wise chains (gates, activations, dropout, residual mixing) that keep only their inputs for the backward.

Autograd keeps every intermediate of a chain such as x + σ(a) ⊙ (Dropout(SiLU(b)) − x) that some op needs for
its backward: several [B, L, ·] tensors per chain. RecomputedChain keeps the chain's inputs (and the seeds of
dropout masks drawn outside) and reruns the chain under autograd in the backward, where it costs a pass over a few
tensors. A linear layer fed by the chain can run inside the function, so that the chain's output, which the
linear would keep, is recomputed too. Gradients are those of the plain expression (`RecomputedChain.plain`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mega.amp import custom_bwd, custom_fwd
from mega.dropout import Dropout, SeededMask, scaled_product

Chain = Callable[..., torch.Tensor]
SAVED = object()  # marks the inputs RecomputedChain saves (the tensors)


def drop(x: torch.Tensor, keep: torch.Tensor | SeededMask | None, scale: float) -> torch.Tensor:
    """x · keep · scale, or x when nothing is dropped (keep None); keep: a bool mask or its seed."""
    if keep is None:
        return x
    return scaled_product(x, keep.mask() if isinstance(keep, SeededMask) else keep, scale)


def dropout_draw(dropout: Dropout, x: torch.Tensor) -> tuple[SeededMask | None, float]:
    """(keep mask seed, scale) of one draw of `dropout` for a tensor like x; (None, 1.0) when nothing is dropped."""
    return dropout.draw(x.shape, x.device) or (None, 1.0)


def save_inputs(ctx, *inputs) -> None:
    """Save the tensors among `inputs` for the backward; keep the rest (None, numbers, mask seeds) on ctx."""
    ctx.constants = [SAVED if isinstance(t, torch.Tensor) else t for t in inputs]
    ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))


def saved_inputs(ctx, needs: Sequence[bool]) -> list:
    """The inputs of save_inputs again, tensors detached and requiring grad where `needs` says."""
    saved = iter(ctx.saved_tensors)
    return [
        next(saved).detach().requires_grad_(need) if constant is SAVED else constant
        for constant, need in zip(ctx.constants, needs)
    ]


def input_grads(output, grad_output, leaves: list) -> list[torch.Tensor | None]:
    """Gradients of the leaves that require grad (None for the others) for autograd.grad(output, ...)."""
    wanted = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    found = iter(torch.autograd.grad(output, wanted, grad_output) if wanted else ())
    return [next(found) if isinstance(t, torch.Tensor) and t.requires_grad else None for t in leaves]


def linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """h Wᵀ + b; b is a vector or a tensor of the output's shape (then added inside the matmul)."""
    if bias is None or bias.dim() == 1:
        return F.linear(h, weight, bias)
    flat = torch.addmm(bias.reshape(-1, bias.size(-1)), h.reshape(-1, h.size(-1)), weight.t())
    return flat.view(*h.shape[:-1], weight.size(0))


def project(
    h: torch.Tensor, sizes: Sequence[int] | None, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """h (no weight), h Wᵀ + b, or with `sizes` one output per block of W's rows (separate tensors, no split)."""
    if weight is None:
        return h
    if sizes is None:
        return linear(h, weight, bias)
    biases = [None] * len(sizes) if bias is None else bias.split(sizes, -1)
    return tuple(linear(h, w, b) for w, b in zip(weight.split(sizes), biases))


class RecomputedChain(torch.autograd.Function):
    """y = chain(*inputs), or y = chain(*inputs) Wᵀ + b (per row block of W with `sizes`), keeping only the inputs.

    chain: element-wise (cheap to rerun); inputs: tensors, None (no dropout mask) or numbers (a dropout scale),
    only the tensors are saved. bias: a vector or a
    tensor of the output's shape, never kept (its gradient is the output's, summed to its shape). Under autocast
    the backward reruns the chain and takes the matmuls under the forward's autocast state, as autograd would.
    """

    @staticmethod
    @custom_fwd
    def forward(ctx, chain: Chain, sizes, weight, bias, *inputs):
        with torch.no_grad():
            out = project(chain(*inputs), sizes, weight, bias)
        ctx.chain, ctx.sizes = chain, sizes
        ctx.bias_shape, ctx.bias_dtype = (None, None) if bias is None else (bias.shape, bias.dtype)
        save_inputs(ctx, weight, *inputs)
        return out

    @staticmethod
    @custom_bwd
    def backward(ctx, *grads):
        weight, *leaves = saved_inputs(ctx, (False, *ctx.needs_input_grad[4:]))
        with torch.enable_grad():
            h = ctx.chain(*leaves)
        grad_weight = grad_bias = None
        if weight is None:
            grad_h = grads[0]
        else:
            blocks = weight.split(ctx.sizes) if ctx.sizes else [weight]
            flat = [g.reshape(-1, g.size(-1)) for g in grads]
            grad_h = flat[0] @ blocks[0]
            for g, w in zip(flat[1:], blocks[1:]):
                # accumulated in place (no temporary per block); in-place ops do not autocast: cast as matmul did
                grad_h = grad_h.addmm_(g.to(grad_h.dtype), w.to(grad_h.dtype))
            grad_h = grad_h.view(*h.shape[:-1], -1).to(h.dtype)
            if ctx.needs_input_grad[2]:
                flat_h = h.detach().reshape(-1, h.size(-1))
                grad_weight = torch.cat([g.t() @ flat_h for g in flat])
                grad_weight = grad_weight.to(weight.dtype)
            if ctx.needs_input_grad[3]:
                grad_bias = torch.cat([g.sum_to_size(ctx.bias_shape[:-1] + g.shape[-1:]) for g in grads], -1)
                grad_bias = grad_bias.sum_to_size(ctx.bias_shape).to(ctx.bias_dtype)
        return None, None, grad_weight, grad_bias, *input_grads(h, grad_h, leaves)

    @staticmethod
    def plain(chain: Chain, sizes, weight, bias, *inputs):
        """The same expression in autograd ops (what the tests compare with; used inside torch.compile)."""
        return project(chain(*inputs), sizes, weight, bias)


def recomputed(chain: Chain, *inputs, sizes=None, weight=None, bias=None):
    """RecomputedChain.apply(chain, sizes, weight, bias, *inputs); the plain expression inside torch.compile (which
    fuses and recomputes chains itself)."""
    function = RecomputedChain.plain if torch.compiler.is_compiling() else RecomputedChain.apply
    return function(chain, sizes, weight, bias, *inputs)
