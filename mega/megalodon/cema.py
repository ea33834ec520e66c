"""CEMA, the complex EMA of Megalodon (paper §3.1): MEGA's damped EMA with complex decays, on MEGA's machinery."""

from __future__ import annotations

import math

import torch
from torch import nn

from mega.ema import convolve, power_kernel, recurrent_step


class ComplexEMA(nn.Module):
    """h_t = α e^{iθ} ⊙ u_t + (1 − α ⊙ δ) e^{iθ} ⊙ h_{t−1},  u_t = β x_t,  y_t = Re(ηᵀ h_t) / √h  (eq. 2).

    θ_{j,k} = 2πk/h · ω_j (eq. 3), ω the d learned base angles; α = σ(a), δ = σ(b) as in MEGA. The public code's
    variant: input_phase=False (α u_t), input_expansion=False (no β), base_angle='sigmoid' (ω_j = σ(θ_j)),
    skip=True (+ ω ⊙ x, a skip weight as in MEGA). Bidirectional: rows d..2d−1 run backwards in time.
    The kernel is computed and convolved in at least float32 (also under autocast).
    """

    def __init__(
        self,
        dim: int,
        ndim: int,
        bidirectional: bool = True,
        truncation: int | None = None,
        input_phase: bool = True,
        input_expansion: bool = True,
        base_angle: str = "free",
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.dim, self.ndim = dim, ndim
        self.bidirectional = bidirectional
        self.truncation = truncation
        self.input_phase = input_phase
        self.base_angle = base_angle
        self.scale = math.sqrt(1.0 / ndim)
        rows = 2 * dim if bidirectional else dim
        self.alpha = nn.Parameter(torch.empty(rows, ndim))  # α = σ(alpha): input weight
        self.delta = nn.Parameter(torch.empty(rows, ndim))  # δ = σ(delta): damping
        self.beta = nn.Parameter(torch.empty(rows, ndim)) if input_expansion else None
        self.eta = nn.Parameter(torch.empty(rows, ndim, 2))  # η: real and imaginary parts
        self.angle = nn.Parameter(torch.empty(rows, 1))  # ω_j (base_angle='free') or θ_j with ω_j = σ(θ_j)
        self.omega = nn.Parameter(torch.empty(dim)) if skip else None

    def reset_parameters(self, alpha_delta_std: float = 0.2, beta_std: float = 0.02) -> None:
        """α, δ, β as MEGA's EMA; η, base angles and ω as the public code (η real at start)."""
        with torch.no_grad():
            nn.init.normal_(self.alpha, std=alpha_delta_std)
            nn.init.normal_(self.delta, std=alpha_delta_std)
            if self.beta is not None:
                signs = torch.ones(self.ndim)
                signs[1::2] = -1.0  # MEGA: +1, −1, +1, … along h
                nn.init.normal_(self.beta, std=beta_std).add_(signs)
            nn.init.normal_(self.eta[..., 0], std=1.0)
            self.eta[..., 1].zero_()
            # base angles ω_j = d^(−j/d), j = 1..d, in a random order (per direction): periods from 2π·h to 2π·h·d
            steps = torch.arange(1, self.dim + 1, dtype=torch.float64)
            base = torch.exp(-steps * math.log(self.dim) / self.dim)
            rows = self.angle.size(0) // self.dim
            base = torch.cat([base[torch.randperm(self.dim)] for _ in range(rows)])
            self.angle.copy_((base if self.base_angle == "free" else torch.logit(base)).unsqueeze(-1))
            if self.omega is not None:
                nn.init.trunc_normal_(self.omega, std=0.25, a=-1.0, b=1.0)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input weight α β e^{iθ}, log q = log(1 − αδ) + iθ, output weight η/√h), complex [K, h] each."""
        base = self.angle if self.base_angle == "free" else torch.sigmoid(self.angle)
        wavelets = torch.arange(1, self.ndim + 1, device=base.device, dtype=base.dtype)
        theta = base * wavelets * (2 * math.pi / self.ndim)  # [K, h]
        alpha, delta = torch.sigmoid(self.alpha), torch.sigmoid(self.delta)
        log_q = torch.complex(torch.log1p(-alpha * delta), theta)
        output_weight = torch.view_as_complex(self.eta) * self.scale
        input_weight = alpha if self.beta is None else alpha * self.beta
        if self.input_phase:  # (cos θ + i sin θ)·w; not torch.polar(w, θ), whose gradient assumes w ≥ 0
            return input_weight * torch.complex(torch.cos(theta), torch.sin(theta)), log_q, output_weight
        return input_weight.to(log_q.dtype), log_q, output_weight

    def kernel(self, length: int) -> torch.Tensor:
        """k[j, l] = Re(Σ_k η_k · α_k β_k e^{iθ_k} · q_k^l) / √h, as real [K, length]."""
        input_weight, log_q, output_weight = self.coefficients()
        return power_kernel(input_weight * output_weight, log_q.unsqueeze(-1), length).real

    def kernel_length(self, seq_len: int) -> int:
        return seq_len if self.truncation is None else min(self.truncation, seq_len)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L] bool (True = real) or None → y [B, L, D] by FFT convolution."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            signal = x.to(dtype) if mask is None else x.to(dtype) * mask.unsqueeze(-1)
            kernel = self.kernel(self.kernel_length(x.size(1))).to(dtype)
            y = convolve(signal, kernel, self.bidirectional)
            if self.omega is not None:
                y = torch.addcmul(y, signal, self.omega.to(dtype))
            return y.to(x.dtype)

    def step(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The causal CEMA continued from the complex state h₀ [B, D, h] (None = zeros) over x [B, m, D].

        The recurrence itself (cached decoding, chunk-parallel hand-over): (y [B, m, D], h_m). No truncation.
        """
        if self.bidirectional:
            raise ValueError(
                "the bidirectional CEMA reads future positions and has no recurrent form: "
                "streaming needs bidirectional=False"
            )
        input_weight, log_q, output_weight = self.coefficients()
        y, state = recurrent_step(x, state, input_weight, log_q, output_weight)
        if self.omega is not None:
            y = torch.addcmul(y, x, self.omega)
        return y, state
