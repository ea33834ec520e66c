"""Moving-average gated attention sub-layer: EMA + gated single-head attention, Mega-chunk for any length."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mega.activations import ACTIVATIONS, laplace, relu2
from mega.amp import custom_bwd, custom_fwd
from mega.cache import LayerCache, append_keys
from mega.config import MegaConfig
from mega.dropout import Dropout, keep_mask, kept_fraction, scaled_product
from mega.ema import MultiHeadEMA
from mega.fused import drop, dropout_draw, input_grads, recomputed, save_inputs, saved_inputs
from mega.norms import build_norm
from mega.positional import build_relative_bias

ELEMENT_FUNCTIONS = {"laplace": laplace, "relu2": relu2}


def chunk(x: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """[B, L, ·] with L a multiple of chunk_len → [B, L / chunk_len, chunk_len, ·]."""
    return x.view(x.size(0), -1, chunk_len, *x.shape[2:])


def chunk_layout(
    mask: torch.Tensor | None, chunk_size: int, batch: int, seq_len: int, device: torch.device
) -> tuple[int, torch.Tensor | None]:
    """(C, key mask [B, K, C] or None) for K = ⌈L / C⌉ chunks of C positions.

    C = chunk_size when 0 < chunk_size < L, else L (one chunk). A last partial chunk's padding is masked out.
    """
    chunk_len = chunk_size if 0 < chunk_size < seq_len else seq_len
    pad = -seq_len % chunk_len
    if pad:
        if mask is None:
            mask = torch.ones(batch, seq_len, dtype=torch.bool, device=device)
        mask = F.pad(mask, (0, pad), value=False)
    return chunk_len, chunk(mask, chunk_len) if mask is not None else None


def pad_chunks(chunk_len: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """[B, L, ·] tensors → [B, K, C, ·], a last partial chunk zero-padded (callers unpad with [:, :L])."""
    pad = -tensors[0].size(1) % chunk_len
    return [chunk(F.pad(t, (0, 0, 0, pad)) if pad else t, chunk_len) for t in tensors]


def split_chunks(
    mask: torch.Tensor | None, chunk_size: int, *tensors: torch.Tensor
) -> tuple[int, torch.Tensor | None, list[torch.Tensor]]:
    """[B, L, ·] tensors → (C, key mask [B, K, C] or None, [B, K, C, ·] tensors): chunk_layout and pad_chunks.

    So any length works; callers unpad the output with [:, :L].
    """
    batch, seq_len = tensors[0].shape[:2]
    chunk_len, key_mask = chunk_layout(mask, chunk_size, batch, seq_len, tensors[0].device)
    return chunk_len, key_mask, pad_chunks(chunk_len, *tensors)


def causal_mask(length: int, device: torch.device) -> torch.Tensor:
    """Bool [C, C], True where query i may attend key j (j ≤ i)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def blocked_keys(key_mask: torch.Tensor | None, causal: torch.Tensor | None) -> torch.Tensor | None:
    """Bool [B, K, 1, C] or [C, C] (broadcast to the scores): True where softmax must not attend, None if nowhere.

    A chunk whose keys are all padding is left unblocked: it attends normally (the reference's trick against NaN).
    """
    blocked = None
    if key_mask is not None:
        blocked = ~(key_mask | ~key_mask.any(-1, keepdim=True)).unsqueeze(-2)
    if causal is not None:
        blocked = ~causal if blocked is None else blocked | ~causal
    return blocked


def softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision scores are normalised in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def softmax_scores(
    query: torch.Tensor, key: torch.Tensor, bias: torch.Tensor, blocked: torch.Tensor | None
) -> torch.Tensor:
    """Masked scores Q Kᵀ + bias [B, K, C, C] (query already scaled by 1/√z), as a fresh tensor."""
    # baddbmm adds the bias inside the matmul (no extra pass over the scores)
    scores = torch.baddbmm(bias, query.flatten(0, -3), key.flatten(0, -3).transpose(-1, -2))
    scores = scores.view(*query.shape[:-1], key.size(-2))
    if blocked is not None:
        # a finite minimum: a row with no allowed key gets uniform weights instead of NaN
        scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)
    return scores


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    bias: torch.Tensor,
    key_mask: torch.Tensor | None,
    causal: torch.Tensor | None,
    function: str,
) -> torch.Tensor:
    """Weights [B, K, C, C] for chunked query/key [B, K, C, z]; key_mask [B, K, C] (True = real), causal [C, C].

    softmax: softmax(Q Kᵀ / √z + bias) over allowed keys (see blocked_keys). laplace/relu2: f(Q Kᵀ / n + bias)
    · mask, n = allowed keys, no renormalisation. Differentiable (cross-attention and need_weights use it).
    """
    if function == "softmax":
        scores = softmax_scores(query, key, bias, blocked_keys(key_mask, causal))
        return torch.softmax(scores, dim=-1, dtype=softmax_dtype(scores.dtype)).to(query.dtype)

    if causal is not None:
        lengths = causal.sum(-1, keepdim=True).to(query.dtype)
    elif key_mask is not None:
        lengths = key_mask.sum(-1, keepdim=True).clamp(min=1).unsqueeze(-1).to(query.dtype)
    else:
        lengths = key.size(-2)
    scores = torch.matmul(query, key.transpose(-1, -2)) / lengths + bias
    weights = ELEMENT_FUNCTIONS[function](scores)
    if key_mask is not None:
        weights = weights * key_mask.unsqueeze(-2).to(weights.dtype)
    if causal is not None:
        weights = weights * causal.to(weights.dtype)
    return weights


def softmax_weights_(scores: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """softmax over the last dim (statistics in float32 for half scores), returned in `dtype` (default: the
    scores'); in place where no cast is needed (a fresh L×L tensor costs about a pass).

    Not differentiable: for the forward and backward of RecomputedAttention only.
    """
    dtype = dtype or scores.dtype
    if softmax_dtype(scores.dtype) == scores.dtype == dtype:
        return torch.softmax(scores, dim=-1, out=scores)
    return torch.softmax(scores, dim=-1, dtype=softmax_dtype(scores.dtype)).to(dtype)


def dropout_multiplier(weights: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """The attention dropout as a factor 0 or 1/(1 − p) per weight, drawn from `seed` (the backward redraws it).

    Multiplying by a float mask is several times cheaper on CPU than masking with a bool one; the products
    equal `scaled_product`'s. Half-precision weights get a float32 factor: 1/(1 − p) rounded to 8 bits would
    scale every kept weight a little too much or too little.
    """
    generator = torch.Generator(weights.device).manual_seed(seed)
    keep = keep_mask(weights.shape, p, weights.device, generator, softmax_dtype(weights.dtype))
    return keep.mul_(1.0 / kept_fraction(p))


def drop_weights(weights: torch.Tensor, p: float, seed: int, *more: torch.Tensor) -> list[torch.Tensor]:
    """Attention dropout of `weights` (and of `more` same-shaped tensors) with the mask drawn from `seed`."""
    keep = keep_mask(weights.shape, p, weights.device, torch.Generator(weights.device).manual_seed(seed))
    return [scaled_product(t, keep, 1.0 / kept_fraction(p)) for t in (weights, *more)]


class RecomputedAttention(torch.autograd.Function):
    """O = Dropout(W) V with W = attention_weights(Q, K, bias, ...).

    W ([B, K, C, C], the layer's largest tensor) is not stored: the backward recomputes it from Q, K and the
    bias, and redraws the dropout mask from a saved seed. Gradients are those of the plain expression.
    Softmax has a hand-written backward working in place on two L×L tensors (on CPU each fresh L×L tensor
    costs about as much as a pass over it, page faults; autograd's version makes several), and with
    store=True keeps the probabilities and the dropout multiplier instead of recomputing them (faster; two
    float L×L tensors more per layer; the backward consumes them: no second backward through the graph).
    Under autocast the backward recomputes under the forward's autocast state (same dtypes as the forward) and
    takes the softmax gradient in float32, as autograd does for a softmax computed in float32.
    """

    @staticmethod
    @custom_fwd
    def forward(
        ctx, query, key, value, bias, key_mask, causal, function: str, dropout_p: float, store: bool = False
    ):
        out, stored = attention_forward(
            ctx, query, key, value, bias, key_mask, causal, function, dropout_p, store
        )
        ctx.save_for_backward(query, key, value, bias, key_mask, causal, *stored)
        return out

    @staticmethod
    @custom_bwd
    def backward(ctx, grad_out):
        query, key, value, bias, key_mask, causal, *stored = ctx.saved_tensors
        tensors = (query, key, value, bias, key_mask, causal)
        grads = attention_backward(ctx, grad_out, tensors, stored, ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None, None)


class ProloguedAttention(torch.autograd.Function):
    """RecomputedAttention of (Q, K, V) = prologue(*inputs), keeping the prologue's inputs instead of Q, K, V.

    prologue: cheap element-wise work (e.g. Q, K from the shared representation, V's activation and dropout) that
    the backward reruns under autograd; gradients are those of the plain expression (`ProloguedAttention.plain`).
    """

    @staticmethod
    @custom_fwd
    def forward(ctx, prologue, bias, key_mask, causal, function: str, dropout_p: float, store: bool, *inputs):
        with torch.no_grad():
            query, key, value = prologue(*inputs)
        out, stored = attention_forward(
            ctx, query, key, value, bias, key_mask, causal, function, dropout_p, store
        )
        ctx.prologue, ctx.stored = prologue, len(stored)
        save_inputs(ctx, bias, key_mask, causal, *stored, *inputs)
        return out

    @staticmethod
    @custom_bwd
    def backward(ctx, grad_out):
        kept = 3 + ctx.stored
        bias, key_mask, causal, *rest = saved_inputs(ctx, (False,) * kept + ctx.needs_input_grad[7:])
        stored, leaves = rest[: ctx.stored], rest[ctx.stored :]
        with torch.enable_grad():
            qkv = ctx.prologue(*leaves)
        tensors = (*(t.detach() for t in qkv), bias, key_mask, causal)
        *grad_qkv, grad_bias = attention_backward(
            ctx, grad_out, tensors, stored, (True, True, True, ctx.needs_input_grad[1])
        )
        return None, grad_bias, None, None, None, None, None, *input_grads(qkv, grad_qkv, leaves)

    @staticmethod
    def plain(prologue, bias, key_mask, causal, function: str, dropout_p: float, store: bool, *inputs):
        """Q, K, V in autograd ops, then RecomputedAttention (what the tests compare with; torch.compile uses it)."""
        query, key, value = prologue(*inputs)
        return RecomputedAttention.apply(
            query, key, value, bias, key_mask, causal, function, dropout_p, store
        )


def attention_forward(
    ctx, query, key, value, bias, key_mask, causal, function: str, dropout_p: float, store: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor | None, ...]]:
    """O = Dropout(W) V without autograd; records the dropout seed on ctx; → (O, what the backward must keep)."""
    seed = int(torch.randint(0, 2**62, (1,))) if dropout_p > 0 else None  # global RNG: seeded runs repeat
    stored: tuple[torch.Tensor | None, ...] = ()
    with torch.no_grad():
        if function == "softmax":
            weights = softmax_weights_(softmax_scores(query, key, bias, blocked_keys(key_mask, causal)))
        else:
            weights = attention_weights(query, key, bias, key_mask, causal, function)
        multiplier = None if seed is None else dropout_multiplier(weights, dropout_p, seed)
        if store and function == "softmax":
            stored = (weights, multiplier)
            dropped = weights if multiplier is None else weights * multiplier
        else:
            dropped = weights if multiplier is None else weights.mul_(multiplier)
        out = torch.matmul(dropped, value)
    ctx.function, ctx.dropout_p, ctx.seed, ctx.store = function, dropout_p, seed, bool(stored)
    return out, stored


def attention_backward(ctx, grad_out, tensors, stored, needs) -> tuple[torch.Tensor | None, ...]:
    """Gradients of Q, K, V, bias (where `needs` says) from tensors = (Q, K, V, bias, key mask, causal)."""
    if ctx.function == "softmax":
        return softmax_backward(ctx, grad_out, *tensors, stored, needs)
    query, key, value, bias, key_mask, causal = tensors
    inputs = [
        t.detach().requires_grad_(need) for t, need in zip((query, key, bias), (needs[0], needs[1], needs[3]))
    ]
    with torch.enable_grad():
        weights = attention_weights(*inputs, key_mask, causal, ctx.function)
    dropped = weights.detach()
    # dL/dW in the weights' dtype (float32 under autocast: the dropout scale is not rounded to half)
    grad_weights = torch.matmul(grad_out, value.transpose(-1, -2)).to(weights.dtype)
    if ctx.seed is not None:
        dropped, grad_weights = drop_weights(dropped, ctx.dropout_p, ctx.seed, grad_weights)
    grad_value = torch.matmul(dropped.transpose(-1, -2), grad_out) if needs[2] else None
    wanted = [t for t in inputs if t.requires_grad]
    grads = iter(torch.autograd.grad(weights, wanted, grad_weights) if wanted else ())
    grad_query, grad_key, grad_bias = (next(grads) if t.requires_grad else None for t in inputs)
    return grad_query, grad_key, grad_value, grad_bias


def softmax_backward(
    ctx, grad_out, query, key, value, bias, key_mask, causal, stored, needs
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of Q, K, V, bias for softmax weights P: with G = dL/dP, dL/dS = P ⊙ (G − Σⱼ P G)."""
    blocked = blocked_keys(key_mask, causal)
    with torch.no_grad():
        if ctx.store:
            probs, multiplier = stored
            weights_dtype = probs.dtype
        else:
            scores = softmax_scores(query, key, bias, blocked)
            weights_dtype = scores.dtype  # what the forward multiplied V by
            probs = softmax_weights_(scores, softmax_dtype(weights_dtype))
            del scores
            multiplier = None if ctx.seed is None else dropout_multiplier(probs, ctx.dropout_p, ctx.seed)
        # dL/d(dropped P), in float32 when the weights are half (no copy otherwise)
        grad_scores = torch.matmul(grad_out, value.transpose(-1, -2)).to(softmax_dtype(probs.dtype))
        if multiplier is not None:
            grad_scores.mul_(multiplier)  # now dL/dP
        grad_scores.mul_(probs)  # P ⊙ G, then − P ⊙ Σⱼ P G: the softmax backward in place
        grad_scores.addcmul_(probs, grad_scores.sum(-1, keepdim=True), value=-1.0)
        if blocked is not None:
            grad_scores.masked_fill_(blocked, 0.0)  # masked scores are constants
        grad_value = None
        if needs[2]:
            dropped = probs.to(weights_dtype)  # the forward's weights: in place when no cast is needed
            dropped = dropped if multiplier is None else dropped.mul_(multiplier)
            grad_value = torch.matmul(dropped.transpose(-1, -2), grad_out)
            del dropped
        del probs
        grad_bias = grad_scores.sum_to_size(bias.shape) if needs[3] else None
        grad_scores = grad_scores.to(weights_dtype)  # the scores' dtype, as the matmuls of the forward
        grad_query = torch.matmul(grad_scores, key) if needs[0] else None
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), query) if needs[1] else None
    return grad_query, grad_key, grad_value, grad_bias


def gated_output(attended: torch.Tensor, reset_in: torch.Tensor) -> torch.Tensor:
    """O ⊙ r with r = SiLU(reset_in) (eq. 12), the input of U_h."""
    return attended * F.silu(reset_in)


class MovingAverageGatedAttention(nn.Module):
    """X' = EMA(x̃);  Z = SiLU(X' W_z);  O = f(QKᵀ + b) V;  H = act(X' W_h + U_h(O ⊙ r));  y = x + φ ⊙ (H − x)."""

    def __init__(self, config: MegaConfig) -> None:
        super().__init__()
        self.config = config
        dim, zdim, vdim = config.hidden_size, config.shared_representation_size, config.intermediate_size
        self.dim, self.zdim, self.vdim = dim, zdim, vdim
        self.prenorm = config.normalize_before_mega
        self.chunk_size = config.chunk_size if config.use_chunking else -1
        self.causal = config.is_decoder
        self.function = config.attention_activation
        self.scaling = zdim**-0.5
        self.activation = ACTIVATIONS[config.activation]
        self.norm = build_norm(
            config.normalization_type, dim, config.norm_affine, config.rmsnorm_discards_normalization
        )
        self.ema = MultiHeadEMA(dim, config.ema_projection_size, config.bidirectional, config.truncation)
        self.v_proj = nn.Linear(dim, vdim)
        self.mx_proj = nn.Linear(dim, zdim + vdim + 2 * dim)
        self.h_proj = nn.Linear(vdim, dim)
        self.mx_sizes = [dim, zdim, vdim, dim]  # mx_proj rows: update gate φ, Z, reset gate r, X' W_h
        self.qk_gamma = nn.Parameter(torch.empty(2, zdim))
        self.qk_beta = nn.Parameter(torch.empty(2, zdim))
        self.rel_pos = build_relative_bias(config, config.attention_span)
        self.dropout = Dropout(config.dropout_prob, config.use_feature_dropout)
        self.hidden_dropout = Dropout(config.hidden_dropout_prob, config.use_feature_dropout)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.store_max_chunk = config.attention_store_max_chunk

    def reset_parameters(self) -> None:
        c = self.config
        self.ema.reset_parameters(c.ema_delta_alpha_range, c.ema_beta_range, c.ema_gamma_omega_range)
        for linear in (self.v_proj, self.mx_proj, self.h_proj):
            nn.init.normal_(linear.weight, std=c.initializer_range)
            nn.init.zeros_(linear.bias)
        nn.init.normal_(self.qk_gamma, std=c.initializer_range)
        nn.init.zeros_(self.qk_beta)
        self.rel_pos.reset_parameters(c.initializer_range)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: [B, L, D]; mask: [B, L] bool, True = real (None = no padding).

        cache: x continues a causal sequence after cache.length tokens; the EMA state and the keys/values of
        the open chunk are read from it and updated (cache.length is advanced by the block).
        need_weights: also return the attention weights [B, K, C, C] (with a cache: of the last chunk touched).

        The element-wise chains run in RecomputedChain / ProloguedAttention, which keep only their inputs
        (pre-activations and bool dropout masks) and recompute the rest in the backward.
        """
        residual = x
        if self.prenorm:
            x = self.norm(x)
        value_in = self.v_proj(x)  # before the activation of eq. 10  [B, L, v]
        ema_in = self.ema.preactivation(x, mask, cache)  # before the EMA's SiLU (eq. 6)  [B, L, D]
        # X' = Dropout(EMA(x)) and its four projections (φ, Z, r before their activations, X' W_h) in one
        # function; the last block's bias also carries U_h's (eq. 14's two biases summed)
        dim = self.dim
        bias = torch.cat([self.mx_proj.bias[:-dim], self.mx_proj.bias[-dim:] + self.h_proj.bias])
        gate_in, shared_in, reset_in, hidden_in = recomputed(
            self.ema_output(x.dtype),
            ema_in,
            *dropout_draw(self.dropout, ema_in),
            sizes=self.mx_sizes,
            weight=self.mx_proj.weight,
            bias=bias,
        )
        if cache is None:
            attended, weights = self.attend(shared_in, value_in, mask, need_weights)  # [B, L, v]  (eq. 11)
        else:
            query, key = self.query_key(F.silu(shared_in), self.qk_gamma, self.qk_beta)
            value = self.activation(value_in)
            attended, weights = self.attend_cached(query, key, value, mask, cache, need_weights)
        # eq. 14: X' W_h + b_h + U_h (O ⊙ r) + b_u, r = SiLU(reset_in) (eq. 12)
        hidden = recomputed(gated_output, attended, reset_in, weight=self.h_proj.weight, bias=hidden_in)
        # eq. 13 and 15: y = x + φ ⊙ (Dropout(act(hidden)) − x), φ = σ(gate_in)
        out = recomputed(self.mix(), residual, gate_in, hidden, *dropout_draw(self.dropout, hidden))
        out = out if self.prenorm else self.norm(out)
        return (out, weights) if need_weights else out

    def ema_output(self, dtype: torch.dtype):
        """The chain X' = Dropout(SiLU(ema_in)) in `dtype` (the EMA runs in at least float32)."""

        def chain(ema_in: torch.Tensor, keep: torch.Tensor | None, scale: float = 1.0) -> torch.Tensor:
            return drop(F.silu(ema_in).to(dtype), keep, scale)

        return chain

    def mix(self):
        """The chain y = x + σ(gate_in) ⊙ (Dropout(act(hidden)) − x) (eq. 13, 15)."""

        def chain(x, gate_in, hidden, keep, scale: float = 1.0) -> torch.Tensor:
            return torch.addcmul(x, torch.sigmoid(gate_in), drop(self.activation(hidden), keep, scale) - x)

        return chain

    def query_key(
        self, shared: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q, K = Z ⊙ γ + β per row (eq. 8–9); the softmax scaling 1/√z is folded into Q's scale and offset."""
        q_scale = self.scaling if self.function == "softmax" else 1.0
        query = torch.addcmul(beta[0] * q_scale, shared, gamma[0] * q_scale)
        return query, torch.addcmul(beta[1], shared, gamma[1])

    def attend(
        self,
        shared_in: torch.Tensor,
        value_in: torch.Tensor,
        mask: torch.Tensor | None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block-diagonal attention over chunks of Q, K from Z = SiLU(shared_in) and V = act(value_in).

        Pads to a multiple of the chunk internally and unpads. Q, K, V are recomputed in the backward.
        """
        batch, seq_len, _ = value_in.shape
        chunk_len, key_mask = chunk_layout(mask, self.chunk_size, batch, seq_len, value_in.device)
        causal = causal_mask(chunk_len, value_in.device) if self.causal else None
        bias = self.rel_pos(chunk_len)
        chunks = -(-seq_len // chunk_len)
        value_shape = torch.Size((batch, chunks, chunk_len, self.vdim))
        keep, scale = self.hidden_dropout.draw(value_shape, value_in.device) or (None, 1.0)

        def prologue(shared_in, gamma, beta, value_in, keep):
            query, key = self.query_key(F.silu(shared_in), gamma, beta)
            query, key, value = pad_chunks(chunk_len, query, key, self.activation(value_in))
            return query, key, drop(value, keep, scale)

        inputs = (shared_in, self.qk_gamma, self.qk_beta, value_in, keep)
        function = ProloguedAttention.plain if torch.compiler.is_compiling() else ProloguedAttention.apply
        out = function(  # [B, K, C, v]
            prologue,
            bias,
            key_mask,
            causal,
            self.function,
            self.attention_dropout if self.training else 0.0,
            chunk_len <= self.store_max_chunk,
            *inputs,
        )
        weights = None
        if need_weights:  # the weights are not kept by the memory-saving path: recomputed only when asked for
            query, key, _ = prologue(*inputs)
            weights = attention_weights(query, key, bias, key_mask, causal, self.function)
        return out.reshape(batch, -1, self.vdim)[:, :seq_len], weights  # [B, L, v], [B, K, C, C]

    def attend_cached(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None,
        cache: LayerCache,
        need_weights: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New tokens at positions cache.length… attend to the cached keys of their chunk and to each other.

        The new tokens are split where chunks end: each part is the last rows of its chunk's causal attention,
        so it computes what the full forward computes. Keys are kept for the open chunk only.
        """
        if not self.causal:
            raise ValueError("incremental decoding needs causal attention: set is_decoder=True")
        outputs, weights, done, total = [], None, 0, query.size(1)
        while done < total:
            position = cache.length + done
            room = self.chunk_size - position % self.chunk_size if self.chunk_size > 0 else total
            part = slice(done, done + min(room, total - done))
            append_keys(cache, key[:, part], value[:, part], None if mask is None else mask[:, part])
            count, context = part.stop - part.start, cache.keys.size(1)
            keys_at = torch.arange(context, device=query.device)
            causal = keys_at <= keys_at[context - count :, None]  # the last `count` rows of the triangle
            inputs = (query[:, None, part], cache.keys[:, None])
            bias, key_mask = self.rel_pos(context, context - count), cache.key_mask[:, None]
            out = RecomputedAttention.apply(  # [B, 1, count, v]
                *inputs,
                self.hidden_dropout(cache.values[:, None]),
                bias,
                key_mask,
                causal,
                self.function,
                self.attention_dropout if self.training else 0.0,
            )
            outputs.append(out.squeeze(1))
            if need_weights:
                weights = attention_weights(*inputs, bias, key_mask, causal, self.function)
            if self.chunk_size > 0 and (position + count) % self.chunk_size == 0:
                cache.keys = cache.values = cache.key_mask = None  # the chunk is complete
            done = part.stop
        return torch.cat(outputs, dim=1), weights
