"""DeltaNet: linear attention whose state is edited by the delta rule.

Papers: Schlag et al. 2021, "Linear Transformers Are Secretly Fast Weight Programmers"
(arXiv:2102.11174) — the delta rule; Yang et al. 2024, "Parallelizing Linear Transformers with
the Delta Rule over Sequence Length" (arXiv:2406.06484) — the chunked (WY / UT) training form.
Idea: the fast-weight state S [d_k, d_v] replaces what it returns for k_t instead of adding,
    S_t = S_{t-1} + β_t k_tᵀ (v_t - k_t S_{t-1}),   o_t = q_t S_t,
with q, k L2-normalised per head and a learned writing strength β_t = σ(k_t · w + b) ∈ (0, 1)
(per head, from the key: a variant only sees q, k, v). β = 1 and orthonormal keys store values
exactly. No 1/√d scaling (q is unit-norm).
Two forms (`mode`), equal up to rounding:
  chunked:   chunks of C. Inside a chunk the updates are S_r = S_0 + Σ_{i<=r} k_iᵀ u_i with
             pseudo-values u_i = β_i (v_i - k_i S_0 - Σ_{j<i} (k_i·k_j) u_j), i.e.
             U = T diag(β) (V - K S_0),  T = (I + tril(diag(β) K Kᵀ, -1))^{-1}
             (the UT transform: one unit-lower-triangular solve per chunk for W = T diag(β) K,
             Ũ = T diag(β) V, independent of the state). Across chunks a scan carries S:
             U = Ũ - W S_0,  O = Q S_0 + tril(Q Kᵀ) U,  S_C = S_0 + Kᵀ U.
             Time O(L · C · d + L · d²), memory O(L · C + (L / C) · d²) per head;
  recurrent: a scan over tokens, time O(L · d²), state d² per head.
Causal only (causal=False raises). A padded token has β = 0 and zero k, v: no update, invisible.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv


def l2_normalize(x, eps: float = 1e-6):
    """x / ‖x‖ over the last axis (eps inside the root: a zero vector stays zero)."""
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def delta_recurrent(q, k, v, beta):
    """Token scan. q, k: [B, L, H, Dk]; v: [B, L, H, Dv]; beta: [B, L, H].
    Returns ([B, L, H, Dv], the final state S [B, H, Dk, Dv])."""
    batch, _, heads, dk = q.shape
    state = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(q, v))  # [B,H,Dk,Dv]

    def step(s, x):
        q_t, k_t, v_t, b_t = x  # [B, H, Dk], [B, H, Dk], [B, H, Dv], [B, H]
        recalled = jnp.einsum("bhd,bhde->bhe", k_t, s)  # k_t S_{t-1}: [B, H, Dv]
        s = s + k_t[..., :, None] * (b_t[..., None] * (v_t - recalled))[..., None, :]
        return s, jnp.einsum("bhd,bhde->bhe", q_t, s)

    state, out = rec.scan_sequence(step, state, (q, k, v, beta))
    return out, state


def delta_chunked(q, k, v, beta, chunk_size: int):
    """The chunked (UT transform) form of `delta_recurrent`, chunks of C = min(chunk_size, L)."""
    batch, length, heads, dk = q.shape
    chunk = min(chunk_size, length)
    # [B, n, H, C, X]: heads before positions, for per-chunk matrix products
    qc, kc, vc = (jnp.swapaxes(rec.to_chunks(x, chunk), 2, 3) for x in (q, k, v))
    bc = jnp.swapaxes(rec.to_chunks(beta, chunk), 2, 3)[..., None]  # [B, n, H, C, 1]
    pos = jnp.arange(chunk)
    below = pos[:, None] > pos[None, :]  # [C, C] strictly lower

    kk = jnp.einsum("bnhid,bnhjd->bnhij", kc, kc)  # [B, n, H, C, C]
    a = jnp.where(below, bc * kk, 0.0)  # tril(diag(β) K Kᵀ, -1)
    rhs = bc * jnp.concatenate([kc, vc], axis=-1)  # diag(β) [K V]: [B, n, H, C, Dk + Dv]
    wu = jax.lax.linalg.triangular_solve(a, rhs, left_side=True, lower=True, unit_diagonal=True)
    w, u = wu[..., :dk], wu[..., dk:]  # W = T diag(β) K, Ũ = T diag(β) V

    def step(s, x):  # s: [B, H, Dk, Dv], the state before this chunk
        w_n, u_n, k_n = x  # [B, H, C, Dk], [B, H, C, Dv], [B, H, C, Dk]
        pseudo = u_n - jnp.einsum("bhcd,bhde->bhce", w_n, s)  # U = Ũ - W S_0
        return s + jnp.einsum("bhcd,bhce->bhde", k_n, pseudo), s

    init = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(q, v))
    _, s0 = rec.scan_sequence(step, init, (w, u, kc))  # [B, n, H, Dk, Dv]
    pseudo = u - jnp.einsum("bnhcd,bnhde->bnhce", w, s0)  # [B, n, H, C, Dv]
    qk = jnp.where(~below.T, jnp.einsum("bnhid,bnhjd->bnhij", qc, kc), 0.0)  # tril(Q Kᵀ)
    out = jnp.einsum("bnhcd,bnhde->bnhce", qc, s0) + jnp.einsum("bnhij,bnhje->bnhie", qk, pseudo)
    return rec.from_chunks(jnp.swapaxes(out, 2, 3), length)  # [B, L, H, Dv]


class DeltaNet(AttentionBase):
    """Causal delta-rule linear attention with a learned writing strength β per token and head.

    Attributes:
      mode: 'chunked' (training form, UT transform) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the chunked form (any L; the last chunk is zero-padded).
    """

    mode: str = "chunked"
    chunk_size: int = 64
    small_settings: ClassVar[dict] = {"chunk_size": 5}  # chunk boundaries show at L = 13
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows S [B, H, D, E]

    capabilities = Capabilities(bidirectional=False, cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        d = head_dim
        norms = 6.0 * q_len * d  # L2 norms of q, k and β = σ(k·w)
        if self.mode == "recurrent":
            return norms + 6.0 * q_len * d * d  # k S, the rank-1 update, q S
        c = min(self.chunk_size, q_len)
        # per token, multiply-adds: K Kᵀ, Q Kᵀ, tril(Q Kᵀ) U (C·d each), the triangular solve
        # (~C·2d / 2); W S, Kᵀ U, Q S (d² each)
        return norms + q_len * (8.0 * c * d + 6.0 * d * d)

    def state_size(self, head_dim):
        return head_dim * head_dim  # S

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("deltanet", self.mode, self.chunk_size)
        heads, dim = q.shape[2], q.shape[3]
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        k32 = repeat_kv(k.astype(dtype), heads)  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]
        w = self.param("beta_weight", nn.initializers.lecun_normal(-1, -2), (heads, dim))  # [H, D]
        b = self.param("beta_bias", nn.initializers.zeros, (heads,))  # [H]
        beta = jax.nn.sigmoid(jnp.einsum("blhd,hd->blh", k32, w) + b)  # [B, L, H]
        q32 = l2_normalize(q.astype(dtype))  # [B, L, H, D]
        k32 = l2_normalize(k32)
        if mask is not None:  # padded: β = 0 (no update), k = v = 0
            k32, v32 = rec.mask_keys(mask, k32, v32)
            beta = jnp.where(mask[:, :, None], beta, 0.0)
        if self.mode == "chunked":
            out = delta_chunked(q32, k32, v32, beta, self.chunk_size)
        else:
            out, state = delta_recurrent(q32, k32, v32, beta)
            self.sow("intermediates", "recurrent_state", state)  # S [B, H, D, E]
        return out.astype(q.dtype)  # [B, L, H, E]


VARIANT = DeltaNet
