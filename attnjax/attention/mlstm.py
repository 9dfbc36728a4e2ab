"""mLSTM: the matrix-memory LSTM of xLSTM, with exponential input gates and a normaliser state.

Paper: Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory" (arXiv:2405.04517), the
mLSTM cell (section 2.3, appendix A.3 for the parallel form).
Idea: a covariance-rule memory C [d, d] written through an exponential input gate and kept
through a forget gate, with a normaliser n [d] and a max-state m for numerical stability:
    ĩ_t, f̃_t = [q_t, k_t, v_t] · w_{i,f} + b_{i,f}          (one scalar each per head)
    log f_t = log σ(f̃_t)  ('sigmoid', default)  or  f̃_t  ('exp'),   k_t ← k_t / √d
    m_t = max(log f_t + m_{t-1}, ĩ_t),  i'_t = exp(ĩ_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t)
    C_t = f'_t C_{t-1} + i'_t k_tᵀ v_t,   n_t = f'_t n_{t-1} + i'_t k_t
    h_t = q_t C_t / max(|q_t · n_t|, exp(-m_t)),   then a per-head LayerNorm (scale, no bias).
(Row-vector convention: C maps keys to values.) The stabilised C, n are the unstabilised ones
times exp(-m_t), so h is the paper's (q C) / max(|q n|, 1) at any m.
Two forms (`mode`), equal up to rounding:
  parallel:  D̃_ij = F_i - F_j + ĩ_j for j <= i (F = cumulative log f), m_i = max_j D̃_ij,
             C̃ = (q kᵀ / √d) ⊙ exp(D̃ - m_i), h = C̃ V / max(|Σ_j C̃_ij|, exp(-m_i));
             time O(L² · d), memory O(L²) per head;
  recurrent: the scan above, time O(L · d²), state C (d²) + n (d) + m (1) per head.
Both start from "no content" (m_0 = -∞, held as a large finite negative so padded steps stay
NaN-free): a query that sees no key has n = 0 and outputs 0. (The authors' step kernel starts
from m_0 = 0, which only changes the normaliser's floor until a key arrives.)
Causal only (causal=False raises). A padded token has ĩ = -∞, log f = 0: the state is unchanged.
Deviations: gates come from the concatenated q, k, v as in the authors' mLSTM layer (the paper
writes them from x); the mLSTM block's up-projection, short convolution, learnable skip and
output gate belong to the surrounding block. Initialisation as the authors': gate weights 0,
input-gate bias N(0, 0.1²), forget-gate bias linspace(3, 6) over heads.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv

NO_CONTENT = -1e30  # m before any key: exp(ĩ - m) would be +inf, but m is replaced at once
MODES = ("parallel", "recurrent")


def _floor(m):
    """exp(-m) with m of a state that saw no key read as 0 (its n is 0, so h = 0 either way)."""
    return jnp.exp(-jnp.where(m > NO_CONTENT / 2, m, 0.0))


def mlstm_parallel(q, k, v, log_i, log_f, eps):
    """q, k: [B, L, H, D] (k already / √d); v: [B, L, H, E]; log_i, log_f: [B, L, H].
    Returns [B, L, H, E]."""
    length = q.shape[1]
    f_cum = jnp.cumsum(log_f, axis=1)  # F_i: [B, L, H]
    causal = jnp.tril(jnp.ones((length, length), bool))  # [L, L]
    d = f_cum[:, :, None, :] - f_cum[:, None, :, :] + log_i[:, None, :, :]  # [B, i, j, H]
    d = jnp.where(causal[None, :, :, None], d, NO_CONTENT)
    m = d.max(axis=2)  # [B, L, H]
    seen = d > NO_CONTENT / 2  # a visible, real key (a blind query has m = NO_CONTENT too)
    decay = jnp.where(seen, jnp.exp(d - m[:, :, None, :]), 0.0)  # [B, L, L, H]
    scores = jnp.einsum("bihd,bjhd->bijh", q, k) * decay  # [B, L, L, H]
    norm = jnp.maximum(jnp.abs(scores.sum(axis=2)), _floor(m)) + eps  # [B, L, H]
    return jnp.einsum("bijh,bjhe->bihe", scores, v) / norm[..., None]


def mlstm_recurrent(q, k, v, log_i, log_f, eps):
    """Token scan of the same arguments. Returns ([B, L, H, E], final (C, n, m))."""
    batch, _, heads, dim = q.shape
    dtype = rec.compute_dtype(q, v)
    init = (jnp.zeros((batch, heads, dim, v.shape[-1]), dtype),  # C: [B, H, D, E]
            jnp.zeros((batch, heads, dim), dtype),  # n: [B, H, D]
            jnp.full((batch, heads), NO_CONTENT, dtype))  # m: [B, H]

    def step(state, x):
        c, n, m = state
        q_t, k_t, v_t, i_t, f_t = x  # [B, H, D], [B, H, D], [B, H, E], [B, H], [B, H]
        m_new = jnp.maximum(f_t + m, i_t)
        keep, write = jnp.exp(f_t + m - m_new), jnp.exp(i_t - m_new)  # f'_t, i'_t: [B, H]
        c = keep[..., None, None] * c + (write[..., None] * k_t)[..., :, None] * v_t[..., None, :]
        n = keep[..., None] * n + write[..., None] * k_t
        norm = jnp.maximum(jnp.abs(jnp.einsum("bhd,bhd->bh", q_t, n)), _floor(m_new)) + eps
        return (c, n, m_new), jnp.einsum("bhd,bhde->bhe", q_t, c) / norm[..., None]

    state, out = rec.scan_sequence(step, init, (q, k, v, log_i, log_f))
    return out, state


def forget_bias_init(key, shape, dtype=jnp.float32):
    return jnp.linspace(3.0, 6.0, shape[0], dtype=dtype)  # the authors' linspace(3, 6)


class MLSTM(AttentionBase):
    """xLSTM's mLSTM cell over projected q, k, v: exponential input gate, matrix memory.

    Attributes:
      mode: 'parallel' (training form) or 'recurrent' (scan over tokens).
      forget_gate: 'sigmoid' (log f = log σ(f̃), the paper's default) or 'exp' (log f = f̃).
      head_norm: the per-head LayerNorm after the cell (the authors' MultiHeadLayerNorm).
      eps: added to the normaliser (and the LayerNorm variance).
    """

    mode: str = "parallel"
    forget_gate: str = "sigmoid"
    head_norm: bool = True
    eps: float = 1e-6
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows (C, n, m)

    capabilities = Capabilities(bidirectional=False, cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        d = head_dim
        gates = 12.0 * q_len * d  # [q, k, v] · w for two gates
        if self.mode == "recurrent":  # C and n updates, q C, q n
            return gates + q_len * (6.0 * d * d + 6.0 * d)
        return gates + 4.0 * q_len * kv_len * d / 2  # causal half of q kᵀ and scores · V

    def state_size(self, head_dim):
        return head_dim * head_dim + head_dim + 1  # C, n, m

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("mlstm", self.mode, 1, MODES)
        if self.forget_gate not in ("sigmoid", "exp"):
            raise ValueError(f"mlstm forget_gate {self.forget_gate!r} not in ('sigmoid', 'exp')")
        heads, dim = q.shape[2], q.shape[3]
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        q32 = q.astype(dtype)  # [B, L, H, D]
        k32 = repeat_kv(k.astype(dtype), heads)  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]

        qkv = jnp.concatenate([q32, k32, v32], axis=-1)  # [B, L, H, 2D + E]
        w = self.param("gate_weight", nn.initializers.zeros, (heads, qkv.shape[-1], 2))
        b_i = self.param("input_gate_bias", nn.initializers.normal(0.1), (heads,))
        b_f = self.param("forget_gate_bias", forget_bias_init, (heads,))
        pre = jnp.einsum("blhc,hcg->blhg", qkv, w)  # [B, L, H, 2]
        log_i = pre[..., 0] + b_i  # ĩ: [B, L, H]
        f_tilde = pre[..., 1] + b_f
        log_f = jax.nn.log_sigmoid(f_tilde) if self.forget_gate == "sigmoid" else f_tilde
        k32 = k32 / jnp.sqrt(jnp.asarray(dim, dtype))
        if mask is not None:  # padded: no write (ĩ = -∞), no forgetting, k = v = 0
            k32, v32 = rec.mask_keys(mask, k32, v32)
            log_i = jnp.where(mask[:, :, None], log_i, NO_CONTENT)
            log_f = jnp.where(mask[:, :, None], log_f, 0.0)
        if self.mode == "parallel":
            out = mlstm_parallel(q32, k32, v32, log_i, log_f, self.eps)
        else:
            out, state = mlstm_recurrent(q32, k32, v32, log_i, log_f, self.eps)
            self.sow("intermediates", "recurrent_state", state)  # C, n, m
        if self.head_norm:
            scale = self.param("head_norm_scale", nn.initializers.ones, (heads, v.shape[-1]))
            mean = out.mean(-1, keepdims=True)  # [B, L, H, 1]
            var = jnp.square(out - mean).mean(-1, keepdims=True)
            out = (out - mean) * jax.lax.rsqrt(var + self.eps) * scale  # [B, L, H, E]
        return out.astype(q.dtype)


VARIANT = MLSTM
