"""Multi-dimensional damped EMA (MultiHeadEMA): kernel from a few small powers, FFT convolution at fast lengths."""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from mega.amp import custom_bwd, custom_fwd


@cache
def fast_fft_length(n: int) -> int:
    """Smallest 2^a·3^b·5^c ≥ n (pocketfft is fast on these; 4L−2 = 2·8191 at L=4096 is not)."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35 << max(0, math.ceil(math.log2(n / power35)))
            while candidate // 2 >= n and candidate % 2 == 0:
                candidate //= 2
            if n <= candidate < best:
                best = candidate
            power35 *= 3
        power5 *= 5
    return best


class CircularConvolution(torch.autograd.Function):
    """y = (x ⊛ k)[..., :L]: circular convolution of x zero-padded to n with a length-n kernel, along the last axis.

    Autograd through rfft/irfft would keep the padded input and its spectrum (4 [B, D, L]-sized float tensors);
    this keeps only x and the kernel and recomputes the spectrum of x in the backward (one more FFT).
    Under autocast it runs in float32 (the reference keeps the FFT in float32; half FFTs need power-of-2 sizes).
    """

    @staticmethod
    @custom_fwd(cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """x: [B, D, L], kernel: [D, n] → [B, D, L]."""
        n, seq_len = kernel.size(-1), x.size(-1)
        kernel_f = torch.fft.rfft(kernel)
        ctx.save_for_backward(x, kernel_f)
        ctx.n = n
        return torch.fft.irfft(torch.fft.rfft(x, n=n) * kernel_f, n=n)[..., :seq_len]

    @staticmethod
    @custom_bwd
    def backward(ctx, grad: torch.Tensor):
        x, kernel_f = ctx.saved_tensors
        n, seq_len = ctx.n, x.size(-1)
        grad_f = torch.fft.rfft(grad, n=n)
        grad_x = grad_kernel = None
        if ctx.needs_input_grad[0]:  # correlation with the kernel
            grad_x = torch.fft.irfft(grad_f * kernel_f.conj(), n=n)[..., :seq_len]
        if ctx.needs_input_grad[1]:  # correlation with the input, summed over the batch
            cross = grad_f * torch.fft.rfft(x, n=n).conj()
            grad_kernel = torch.fft.irfft(cross.sum(0), n=n)
        return grad_x, grad_kernel


class MultiHeadEMA(nn.Module):
    """h_t = p ⊙ β x_t + q ⊙ h_{t−1},  y_t = Σ_n γ_n h_t[n] / √N;  output SiLU(y + ω ⊙ x).

    Parameter names follow the reference code (delta plays the paper's α, alpha the paper's δ).
    Bidirectional: a second kernel (rows D..2D−1) runs backwards in time; both include lag 0.
    """

    def __init__(
        self, dim: int, ndim: int, bidirectional: bool = True, truncation: int | None = None
    ) -> None:
        super().__init__()
        self.dim = dim
        self.ndim = ndim
        self.bidirectional = bidirectional
        self.truncation = truncation
        self.scale = math.sqrt(1.0 / ndim)
        kernel_dim = 2 * dim if bidirectional else dim
        self.delta = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.alpha = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.beta = nn.Parameter(torch.empty(kernel_dim, ndim, 1))
        self.gamma = nn.Parameter(torch.empty(kernel_dim, ndim))
        self.omega = nn.Parameter(torch.empty(dim))

    def reset_parameters(
        self, delta_alpha_std: float = 0.2, beta_std: float = 0.02, gamma_omega_std: float = 1.0
    ):
        with torch.no_grad():
            nn.init.normal_(self.delta, std=delta_alpha_std)
            nn.init.normal_(self.alpha, std=delta_alpha_std)
            # β ~ N(0, beta_std) plus the sign pattern +1, −1, +1, … along N (the reference: "more stable")
            signs = torch.ones(self.ndim, 1)
            signs[1::2] = -1.0
            nn.init.normal_(self.beta, std=beta_std).add_(signs)
            nn.init.normal_(self.gamma, std=gamma_omega_std)
            nn.init.normal_(self.omega, std=gamma_omega_std)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """p = σ(delta) (input weight), q = 1 − p·σ(alpha) (decay), each [K, N, 1]."""
        p = torch.sigmoid(self.delta)
        q = 1.0 - p * torch.sigmoid(self.alpha)
        return p, q

    def kernel(self, length: int) -> torch.Tensor:
        """k[d, l] = Σ_n γ[d,n]/√N · p[d,n] β[d,n] · q[d,n]^l, as [K, length]."""
        p, q = self.coefficients()
        weight = (p * self.beta).squeeze(-1) * (self.gamma * self.scale)  # [K, N]
        return power_kernel(weight, torch.log(q), length)

    def kernel_length(self, seq_len: int) -> int:
        return seq_len if self.truncation is None else min(self.truncation, seq_len)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L] bool (True = real) or None → [B, L, D].

        With a cache (a mega.cache.LayerCache), x continues the sequence from cache.ema_state, which is updated.
        """
        return F.silu(self.preactivation(x, mask, cache)).to(x.dtype)

    def preactivation(self, x: torch.Tensor, mask: torch.Tensor | None = None, cache=None) -> torch.Tensor:
        """y + ω ⊙ x before the output SiLU, [B, L, D] contiguous, in at least float32 (reference), also under
        autocast; arguments as forward."""
        taps = self.kernel_length(x.size(1))
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            x32 = x.to(dtype)
            signal = x32 if mask is None else x32 * mask.unsqueeze(-1)
            if cache is None:
                y = self.convolve(signal, self.kernel(taps).to(dtype))
            else:
                y, cache.ema_state = self.step(signal, cache.ema_state)
            # ω ⊙ x first: the sum takes its [B, L, D] layout, not the convolution's transposed one (whose
            # strided result every linear layer after it would copy and keep)
            return torch.mul(x32, self.omega.to(dtype)).add_(y)

    def step(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The causal EMA continued from state h₀ [B, D, N] (None = zeros) over m new steps x [B, m, D].

        No truncation: the recurrence remembers every step (equal to the convolution while length ≤ truncation).
        """
        if self.bidirectional:
            raise ValueError(
                "the bidirectional EMA reads future tokens and has no recurrent form: "
                "incremental decoding needs bidirectional=False"
            )
        p, q = self.coefficients()
        input_weight = (p * self.beta).squeeze(-1)  # [D, N]
        return recurrent_step(x, state, input_weight, torch.log(q).squeeze(-1), self.gamma * self.scale)

    def convolve(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        return convolve(x, kernel, self.bidirectional)


def power_kernel(weight: torch.Tensor, log_q: torch.Tensor, length: int) -> torch.Tensor:
    """k[d, l] = Σ_n weight[d, n] · q[d, n]^l as [K, length]; weight [K, N], log_q = log q [K, N, 1], real or complex.

    q^(i·m + j) = q^(i·m) · q^j: two small power tables and one batched matmul instead of exp over K×N×length.
    """
    inner = max(1, math.isqrt(length - 1) + 1) if length > 1 else 1
    outer = -(-length // inner)
    steps = torch.arange(inner, device=log_q.device, dtype=log_q.real.dtype)
    inner_powers = torch.exp(log_q * steps)  # [K, N, m]: q^j
    outer_powers = torch.exp(log_q * (steps.new_tensor(range(outer)) * inner))  # [K, N, M]: q^(i·m)
    kernel = torch.bmm((weight.unsqueeze(-1) * outer_powers).transpose(1, 2), inner_powers)  # [K, M, m]
    return kernel.reshape(kernel.size(0), -1)[:, :length]


def recurrent_step(
    x: torch.Tensor,
    state: torch.Tensor | None,
    input_weight: torch.Tensor,
    log_q: torch.Tensor,
    output_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = w_in x_t + q h_{t−1},  y_t = Re(Σ_n w_out h_t[n]) over m new steps x [B, m, D] from h₀ = state.

    y_t = Re Σ_n w_out (Σ_{j≤t} w_in q^(t−j) x_j + q^(t+1) h₀)  and  h_m = Σ_j w_in q^(m−1−j) x_j + q^m h₀:
    the recurrence in closed form, so one token costs O(D·N) whatever came before. w_in, log q, w_out: [D, N],
    real (MEGA's EMA) or complex (CEMA); state [B, D, N] of their dtype, None = zeros.
    """
    steps = x.size(1)
    state_x = x.to(input_weight.dtype)
    if steps == 1:
        new_state = input_weight * state_x[:, 0, :, None]
        if state is not None:
            new_state = new_state + torch.exp(log_q) * state
        return torch.einsum("bdn,dn->bd", new_state, output_weight).real.unsqueeze(1), new_state
    powers = torch.exp(log_q.unsqueeze(-1) * torch.arange(steps + 1, device=x.device))  # [D, N, m+1]
    y = convolve(x, power_kernel(input_weight * output_weight, log_q.unsqueeze(-1), steps).real, False)
    new_state = torch.einsum(
        "bld,dnl->bdn", state_x, input_weight.unsqueeze(-1) * powers[..., :steps].flip(-1)
    )
    if state is not None:
        y = y + torch.einsum("bdn,dnl->bld", state, output_weight.unsqueeze(-1) * powers[..., 1:]).real
        new_state = new_state + powers[..., steps] * state
    return y, new_state


def convolve(x: torch.Tensor, kernel: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """y[t] = Σ_j k_f[j] x[t−j] (+ Σ_j k_b[j] x[t+j] when bidirectional) by one circular FFT convolution.

    kernel: [D, ℓ] (causal) or [2D, ℓ] (rows D..2D−1 run backwards in time, both include lag 0).
    With n ≥ L + ℓ − 1 no lag wraps onto a real position, so n is the smallest fast length above that
    (the reference uses 2·(L + ℓ − 1); the result is the same up to round-off). x: [B, L, D] → [B, L, D].
    """
    seq_len, taps = x.size(1), kernel.size(1)
    n = fast_fft_length(seq_len + taps - 1)
    if bidirectional:
        dim = kernel.size(0) // 2
        forward_k, backward_k = kernel.split(dim, dim=0)
        # lag j ≥ 0 at index j, lag −j at index n − j (circular layout)
        kernel = F.pad(forward_k, (0, n - taps)) + torch.cat(
            [backward_k[:, :1], kernel.new_zeros(dim, n - taps), backward_k[:, 1:].flip(-1)], dim=1
        )
    else:
        kernel = F.pad(kernel, (0, n - taps))
    # FFT along the last axis of the [B, D, L] view (faster than along the strided time axis)
    return CircularConvolution.apply(x.transpose(1, 2), kernel).transpose(1, 2)
