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
             (the UT transform: T per chunk by block doubling, log2 C rounds of matmuls,
             then W = T diag(β) K, Ũ = T diag(β) V, independent of the state). Across
             chunks a scan carries S:
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


def unit_lower_inverse(a):
    """(I + a)^{-1} for strictly lower-triangular a [..., C, C], by block doubling: with the
    inverses T1, T2 of two adjacent diagonal blocks, the merged block's inverse is
    [[T1, 0], [-T2 A21 T1, T2]] (A21 the block below the diagonal). log2 C rounds of batched
    matmuls; C is padded to a power of two with zero rows (the top-left C x C block's inverse
    is unchanged). Plain matmuls rather than `lax.linalg.triangular_solve`: on XLA:CPU that
    custom call fans its batch out onto the intra-op thread pool it already runs on and waits,
    so independent solves running at once (a train step's layers and their gradients) can
    occupy every worker and deadlock the step (seen on 2 cores, jaxlib 0.10)."""
    c, batch = a.shape[-1], a.shape[:-2]
    size = 1 << (c - 1).bit_length()  # the next power of two >= C
    a = jnp.pad(a, [(0, 0)] * len(batch) + [(0, size - c)] * 2)  # [..., P, P]
    inv = jnp.ones((*batch, size, 1, 1), a.dtype)  # inverses of the 1 x 1 diagonal blocks
    s = 1
    while s < size:
        n = size // (2 * s)  # pairs of s x s blocks merging into 2s x 2s ones
        blocks = a.reshape(*batch, n, 2 * s, n, 2 * s)
        diag = jnp.moveaxis(jnp.diagonal(blocks, axis1=-4, axis2=-2), -1, -3)  # [..., n, 2s, 2s]
        t1, t2 = inv[..., 0::2, :, :], inv[..., 1::2, :, :]  # [..., n, s, s]
        lower = -t2 @ diag[..., s:, :s] @ t1  # -T2 A21 T1
        inv = jnp.concatenate([jnp.concatenate([t1, jnp.zeros_like(t1)], -1),
                               jnp.concatenate([lower, t2], -1)], -2)  # [..., n, 2s, 2s]
        s *= 2
    return inv[..., 0, :c, :c]  # [..., C, C]


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
    wu = unit_lower_inverse(a) @ rhs  # T diag(β) [K V]
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
        p = 1 << (c - 1).bit_length()  # T's size, padded to a power of two
        # per token, multiply-adds: K Kᵀ, Q Kᵀ, tril(Q Kᵀ) U (C·d each), T [K V] (C·2d), T by
        # block doubling (~P²/3); W S, Kᵀ U, Q S (d² each)
        return norms + q_len * (10.0 * c * d + 2.0 * p * p / 3.0 + 6.0 * d * d)

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
