"""Gated DeltaNet: the delta rule with a data-dependent scalar forget gate per head.

Paper: Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta Rule"
(arXiv:2412.06464).
Idea: DeltaNet's state edit plus Mamba2's decay (row-vector convention of deltanet.py):
    S_t = α_t (I - β_t k_tᵀ k_t) S_{t-1} + β_t k_tᵀ v_t
        = α_t S_{t-1} + β_t k_tᵀ (v_t - α_t k_t S_{t-1}),      o_t = q_t S_t,
with q, k L2-normalised per head, β_t = σ(k_t · w_β + b_β) ∈ (0, 1) and, as in Mamba2,
log α_t = -exp(a_h) · softplus(k_t · w_α + b_α) <= 0 (a_h = log A_h, A_h ~ U[1, 16]; b_α
initialised so that softplus(b_α) ~ logU[1e-3, 1e-1]).
Two forms (`mode`), equal up to rounding:
  chunked:   chunks of C with b_r = Σ_{i<=r} log α_i the cumulative log-decay inside a chunk,
             γ_r = exp(b_r) and Γ_rj = exp(b_r - b_j) (j <= r; every exponent <= 0). The
             pseudo-values u_r = β_r (v_r - γ_r k_r S_0 - Σ_{j<r} Γ_rj (k_r·k_j) u_j) solve
             U = Ũ - W S_0 with T = (I + tril(diag(β) (K Kᵀ ⊙ Γ), -1))^{-1} (block doubling,
             see deltanet.py), W = T diag(β γ) K, Ũ = T diag(β) V; then
             O = diag(γ) Q S_0 + (tril(Q Kᵀ) ⊙ Γ) U,  S_C = γ_C S_0 + Σ_j Γ_Cj k_jᵀ u_j.
             Time O(L · C · d + L · d² + L · C²), memory O(L · C + (L / C) · d²) per head;
  recurrent: a scan over tokens, time O(L · d²), state d² per head.
Causal only (causal=False raises). A padded token has β = 0, α = 1 and zero k, v: invisible.
Deviations: the paper computes β and α from the layer input x; a variant only sees q, k, v, so
both come from the (un-normalised) key, as in gla.py and deltanet.py. The paper's short
convolutions on q, k, v, its output gate and output norm belong to the surrounding block.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv
from attnjax.attention.deltanet import l2_normalize, unit_lower_inverse


def gated_delta_recurrent(q, k, v, beta, log_alpha):
    """Token scan. q, k: [B, L, H, Dk]; v: [B, L, H, Dv]; beta, log_alpha: [B, L, H].
    Returns ([B, L, H, Dv], the final state S [B, H, Dk, Dv])."""
    batch, _, heads, dk = q.shape
    state = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(q, v))  # [B,H,Dk,Dv]

    def step(s, x):
        q_t, k_t, v_t, b_t, g_t = x  # [B, H, Dk], [B, H, Dk], [B, H, Dv], [B, H], [B, H]
        s = jnp.exp(g_t)[..., None, None] * s  # α_t S_{t-1}
        recalled = jnp.einsum("bhd,bhde->bhe", k_t, s)  # α_t k_t S_{t-1}: [B, H, Dv]
        s = s + k_t[..., :, None] * (b_t[..., None] * (v_t - recalled))[..., None, :]
        return s, jnp.einsum("bhd,bhde->bhe", q_t, s)

    state, out = rec.scan_sequence(step, state, (q, k, v, beta, log_alpha))
    return out, state


def gated_delta_chunked(q, k, v, beta, log_alpha, chunk_size: int):
    """The chunked form of `gated_delta_recurrent`, chunks of C = min(chunk_size, L)."""
    batch, length, heads, dk = q.shape
    chunk = min(chunk_size, length)
    # [B, n, H, C, X]: heads before positions, for per-chunk matrix products
    qc, kc, vc = (jnp.swapaxes(rec.to_chunks(x, chunk), 2, 3) for x in (q, k, v))
    bc, gc = (jnp.swapaxes(rec.to_chunks(x, chunk), 2, 3) for x in (beta, log_alpha))  # [B,n,H,C]
    b = jnp.cumsum(gc, axis=-1)  # [B, n, H, C] log-decay from the chunk start, inclusive
    pos = jnp.arange(chunk)
    seen = pos[:, None] >= pos[None, :]  # [C, C] j <= r
    decay = jnp.exp(jnp.where(seen, b[..., :, None] - b[..., None, :], -jnp.inf))  # Γ: [.., C, C]

    kk = jnp.einsum("bnhid,bnhjd->bnhij", kc, kc) * decay  # K Kᵀ ⊙ Γ: [B, n, H, C, C]
    a = jnp.where(pos[:, None] > pos[None, :], bc[..., None] * kk, 0.0)  # strictly lower
    t = unit_lower_inverse(a)  # [B, n, H, C, C]
    w = t @ ((bc * jnp.exp(b))[..., None] * kc)  # W = T diag(β γ) K: [B, n, H, C, Dk]
    u = t @ (bc[..., None] * vc)  # Ũ = T diag(β) V: [B, n, H, C, Dv]
    b_last = b[..., -1]  # [B, n, H] log-decay over the whole chunk
    k_to_end = kc * jnp.exp(b_last[..., None] - b)[..., None]  # Γ_Cj k_j: [B, n, H, C, Dk]

    def step(s, x):  # s: [B, H, Dk, Dv], the state before this chunk
        w_n, u_n, k_n, g_n = x  # [B, H, C, Dk], [B, H, C, Dv], [B, H, C, Dk], [B, H]
        pseudo = u_n - jnp.einsum("bhcd,bhde->bhce", w_n, s)  # U = Ũ - W S_0
        new = jnp.exp(g_n)[..., None, None] * s + jnp.einsum("bhcd,bhce->bhde", k_n, pseudo)
        return new, s

    init = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(q, v))
    _, s0 = rec.scan_sequence(step, init, (w, u, k_to_end, b_last))  # [B, n, H, Dk, Dv]
    pseudo = u - jnp.einsum("bnhcd,bnhde->bnhce", w, s0)  # [B, n, H, C, Dv]
    qk = jnp.einsum("bnhid,bnhjd->bnhij", qc, kc) * decay  # (Q Kᵀ ⊙ Γ), 0 above the diagonal
    out = jnp.einsum("bnhcd,bnhde->bnhce", qc * jnp.exp(b)[..., None], s0)  # diag(γ) Q S_0
    out = out + jnp.einsum("bnhij,bnhje->bnhie", qk, pseudo)
    return rec.from_chunks(jnp.swapaxes(out, 2, 3), length)  # [B, L, H, Dv]


def decay_rate_init(key, shape, dtype=jnp.float32):
    """a_h = log A_h with A_h ~ U[1, 16] (Mamba2's A_log)."""
    return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))


def step_bias_init(key, shape, dtype=jnp.float32):
    """b_α with softplus(b_α) ~ logU[1e-3, 1e-1] (Mamba2's dt_bias: inverse softplus)."""
    dt = jnp.exp(jax.random.uniform(key, shape, dtype, math.log(1e-3), math.log(1e-1)))
    return dt + jnp.log(-jnp.expm1(-dt))


class GatedDeltaNet(AttentionBase):
    """Causal delta rule with a per-head, per-token forget gate α and writing strength β.

    Attributes:
      mode: 'chunked' (training form) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the chunked form (any L; the last chunk is zero-padded).
    """

    mode: str = "chunked"
    chunk_size: int = 64
    small_settings: ClassVar[dict] = {"chunk_size": 5}  # chunk boundaries show at L = 13
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows S [B, H, D, E]

    capabilities = Capabilities(bidirectional=False, cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        d = head_dim
        gates_and_norms = 10.0 * q_len * d  # L2 norms of q, k; k·w_β, k·w_α
        if self.mode == "recurrent":
            return gates_and_norms + 8.0 * q_len * d * d  # decay, k S, rank-1 update, q S
        c = min(self.chunk_size, q_len)
        p = 1 << (c - 1).bit_length()
        # per token, multiply-adds: K Kᵀ, Q Kᵀ, (Q Kᵀ ⊙ Γ) U (C·d each), T [γK V] (C·2d), T
        # (~P²/3), Γ (C); W S, Kᵀ U, Q S (d² each)
        return gates_and_norms + q_len * (10.0 * c * d + 2.0 * p * p / 3.0 + 2.0 * c
                                          + 6.0 * d * d)

    def state_size(self, head_dim):
        return head_dim * head_dim  # S

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("gated_deltanet", self.mode, self.chunk_size)
        heads, dim = q.shape[2], q.shape[3]
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        k32 = repeat_kv(k.astype(dtype), heads)  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]
        init = nn.initializers.lecun_normal(-1, -2)
        w_beta = self.param("beta_weight", init, (heads, dim))  # [H, D]
        b_beta = self.param("beta_bias", nn.initializers.zeros, (heads,))  # [H]
        w_alpha = self.param("alpha_weight", init, (heads, dim))  # [H, D]
        b_alpha = self.param("alpha_bias", step_bias_init, (heads,))  # [H]
        a_log = self.param("alpha_log_rate", decay_rate_init, (heads,))  # [H]
        beta = jax.nn.sigmoid(jnp.einsum("blhd,hd->blh", k32, w_beta) + b_beta)  # [B, L, H]
        step = jax.nn.softplus(jnp.einsum("blhd,hd->blh", k32, w_alpha) + b_alpha)
        log_alpha = -jnp.exp(a_log) * step  # [B, L, H], <= 0
        q32 = l2_normalize(q.astype(dtype))  # [B, L, H, D]
        k32 = l2_normalize(k32)
        if mask is not None:  # padded: β = 0 (no update), α = 1 (no decay), k = v = 0
            k32, v32 = rec.mask_keys(mask, k32, v32)
            beta = jnp.where(mask[:, :, None], beta, 0.0)
            log_alpha = jnp.where(mask[:, :, None], log_alpha, 0.0)
        if self.mode == "chunked":
            out = gated_delta_chunked(q32, k32, v32, beta, log_alpha, self.chunk_size)
        else:
            out, state = gated_delta_recurrent(q32, k32, v32, beta, log_alpha)
            self.sow("intermediates", "recurrent_state", state)  # S [B, H, D, E]
        return out.astype(q.dtype)  # [B, L, H, E]


VARIANT = GatedDeltaNet
