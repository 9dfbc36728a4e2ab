"""RWKV-6 (Finch) time mixing: linear attention with a data-dependent decay per channel.

Paper: Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States and Dynamic
Recurrence" (arXiv:2404.05892), Finch's time-mixing block (section 4).
Idea (x_t the block input, x_{t-1} the token before it — the token shift):
  ddlerp_□(x_t, x_{t-1}) = x_t + (x_{t-1} - x_t) ⊙ (μ_□ + tanh(x̂_t A) B_□),
      x̂_t = x_t + (x_{t-1} - x_t) ⊙ μ_x                 (data-dependent token-shift mix)
  r, k, v, g = ddlerp_{r,k,v,g}(·) W_{r,k,v,g},   d_t = λ + tanh(ddlerp_w(·) A_w) B_w
  w_t = exp(-exp(d_t)) ∈ (0, 1) per key channel             (data-dependent decay)
  per head: wkv_t = diag(u) k_tᵀ v_t + S_{t-1},  S_t = diag(w_t) S_{t-1} + k_tᵀ v_t
  out = (GroupNorm_heads(r_t wkv_t) ⊙ SiLU(g_t)) W_o          (u: the learned "bonus")
Two forms (`mode`), equal up to rounding:
  chunked:   chunks of C in log space (like gla.py, with the query reading the state before
             its own token: exponents Σ_{i<s<r} log w_s <= 0), the bonus on the diagonal, a
             scan over chunk states; time O(L · C · d + L · d · P) for P = head_dim, memory
             O(L · C · d + (L / C) · d · P) per sequence;
  recurrent: a scan over tokens, time O(L · d · P); decoding state d · P (S, every head) + d
             (the previous token's x for the shift).
Causal only (causal=False raises). Padded positions: x = 0 (so the next token's shift reads 0),
k = v = 0 and w = 1, so the state passes them unchanged.
Deviations: initialisation follows the authors' code at the middle layer of a stack (a mixer
does not know its depth: ratios 0.5), except W_o, which is not zero-initialised here.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention._ssm import symmetric_uniform
from attnjax.attention.base import AttentionBase, Capabilities

MIXES = 5  # w, k, v, r, g


def wkv_recurrent(r, k, v, log_w, u):
    """r, k, log_w: [B, L, H, K]; v: [B, L, H, V]; u: [H, K]. Returns ([B, L, H, V], S)."""
    batch, _, heads, dk = r.shape
    state = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(r, v))

    def step(s, x):
        r_t, k_t, v_t, g_t = x  # [B, H, K], [B, H, K], [B, H, V], [B, H, K]
        kv = k_t[..., :, None] * v_t[..., None, :]  # k_tᵀ v_t: [B, H, K, V]
        out = jnp.einsum("bhk,bhkv->bhv", r_t, s + u[..., None] * kv)
        return jnp.exp(g_t)[..., None] * s + kv, out

    state, out = rec.scan_sequence(step, state, (r, k, v, log_w))
    return out, state


def wkv_chunked(r, k, v, log_w, u, chunk_size: int):
    """The chunked form of `wkv_recurrent` (same arguments), chunks of C = min(size, L)."""
    batch, length, heads, dk = r.shape
    chunk = min(chunk_size, length)
    rc, kc, vc, gc = (rec.to_chunks(x, chunk) for x in (r, k, v, log_w))  # [B, n, C, H, X]
    b = jnp.cumsum(gc, axis=2)  # inclusive log-decay from the chunk start
    before = b - gc  # exclusive: what the state read by token r has decayed

    pos = jnp.arange(chunk)
    strict = (pos[:, None] > pos[None, :])[:, :, None, None]  # i < r
    decay = jnp.exp(jnp.where(strict, before[:, :, :, None] - b[:, :, None, :], -jnp.inf))
    scores = jnp.einsum("bnrhd,bnihd,bnrihd->bnrih", rc, kc, decay)  # [B, n, C, C, H]
    intra = jnp.einsum("bnrih,bnihe->bnrhe", scores, vc)
    bonus = jnp.einsum("bnrhd,bnrhd->bnrh", rc * u, kc)[..., None] * vc  # (r ⊙ u)·k v

    b_last = b[:, :, -1]  # [B, n, H, K]
    chunk_kv = jnp.einsum("bnihd,bnihe->bnhde", kc * jnp.exp(b_last[:, :, None] - b), vc)

    def step(s, x):  # s: [B, H, K, V], the state before this chunk
        dec, kv = x
        return jnp.exp(dec)[..., None] * s + kv, s

    init = jnp.zeros((batch, heads, dk, v.shape[-1]), rec.compute_dtype(r, v))
    _, s0 = rec.scan_sequence(step, init, (b_last, chunk_kv))  # [B, n, H, K, V]
    inter = jnp.einsum("bnrhd,bnhde->bnrhe", rc * jnp.exp(before), s0)
    return rec.from_chunks(intra + bonus + inter, length)  # [B, L, H, V]


def _channel_fraction(shape, dtype):
    return jnp.arange(shape[-1], dtype=dtype) / shape[-1]  # n / d


def mix_init(key, shape, dtype=jnp.float32):
    """μ [.., d] = 1 - (n / d)^0.5 (the authors' 1 - ddd^ratio_1_to_almost0, ratio 0.5)."""
    return jnp.broadcast_to(1.0 - _channel_fraction(shape, dtype) ** 0.5, shape)


def decay_base_init(key, shape, dtype=jnp.float32):
    """λ [d] = -6 + 5 (n / (d - 1))^(0.7 + 1.3 · 0.5) (the authors' time_decay)."""
    n = jnp.arange(shape[0], dtype=dtype) / max(shape[0] - 1, 1)
    return -6.0 + 5.0 * n ** (0.7 + 1.3 * 0.5)


def bonus_init(key, shape, dtype=jnp.float32):
    """u [H, K] = 0.5 (1 - n / (d - 1)) + ((n + 1) % 3 - 1) · 0.1 over the d = H · K channels."""
    d = shape[0] * shape[1]
    n = jnp.arange(d, dtype=dtype)
    u = 0.5 * (1.0 - n / max(d - 1, 1)) + ((n + 1) % 3 - 1) * 0.1
    return u.reshape(shape)


class RWKV6(AttentionBase):
    """Finch time mixing: token shift with data-dependent mixes, data-dependent per-channel
    decay, bonus u, per-head GroupNorm and SiLU gate.

    Attributes:
      mode: 'chunked' (training form) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the chunked form; small, as the intra-chunk decays are a
        [C, C, d] tensor (gla.py's trade-off).
      head_dim: P, channels per head (must divide d_model; the paper's 64).
      mix_rank: rank of the token-shift mixes' LoRA (the paper's 32).
      decay_rank: rank of the decay's LoRA (the paper's 64).
    """

    mode: str = "chunked"
    chunk_size: int = 16
    head_dim: int = 64
    mix_rank: int = 32
    decay_rank: int = 64
    small_settings: ClassVar[dict] = {"chunk_size": 5, "head_dim": 4, "mix_rank": 3,
                                      "decay_rank": 4}
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows (x_{L-1}, S)

    capabilities = Capabilities(level="mixer", bidirectional=False, cross_attention=False)

    def _heads(self, d_model):
        if d_model % self.head_dim:
            raise ValueError(f"rwkv6: head_dim {self.head_dim} must divide d_model {d_model}")
        return d_model // self.head_dim

    def flops(self, q_len, kv_len, head_dim):
        """With d_model = head_dim: r, k, v, g, out projections (5 d²), the LoRAs
        (d · 5R_mix · 2, d · R_w · 2), and the wkv (`decay_flops` per head + the bonus)."""
        d = head_dim
        heads = self._heads(d)
        proj = 2.0 * q_len * (5 * d * d + 10 * d * self.mix_rank + 2 * d * self.decay_rank)
        p = self.head_dim
        wkv = heads * rec.decay_flops(self.mode, q_len, self.chunk_size, p, p, True)
        return proj + wkv + 4.0 * q_len * d

    def state_size(self, head_dim):
        return head_dim * self.head_dim + head_dim  # S of every head + the shifted token

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        rec.check_settings("rwkv6", self.mode, self.chunk_size)
        batch, length, d = x.shape
        heads, p = self._heads(d), self.head_dim
        dtype = rec.compute_dtype(x)  # float32 (float64 for float64 inputs)
        x32 = x.astype(dtype)
        if mask is not None:
            x32 = jnp.where(mask[..., None], x32, 0.0)  # padded: the next shift reads 0
        prev = jnp.pad(x32, [(0, 0), (1, 0), (0, 0)])[:, :-1]  # x_{t-1}: [B, L, d]
        delta = prev - x32

        small = symmetric_uniform(0.01)
        mu_x = self.param("mix_x", mix_init, (d,))
        mu = self.param("mix", mix_init, (MIXES, d))  # μ_w, μ_k, μ_v, μ_r, μ_g
        a = self.param("mix_down", nn.initializers.zeros, (d, MIXES * self.mix_rank))
        b = self.param("mix_up", small, (MIXES, self.mix_rank, d))
        lora = jnp.tanh((x32 + delta * mu_x) @ a).reshape(batch, length, MIXES, -1)
        mixes = mu + jnp.einsum("blmr,mrd->blmd", lora, b)  # [B, L, 5, d]
        xw, xk, xv, xr, xg = (x32 + delta * mixes[:, :, i] for i in range(MIXES))

        def dense(name, inp):
            return nn.Dense(d, use_bias=False, name=name)(inp)

        r, k, v = (dense(n, i).reshape(batch, length, heads, p)
                   for n, i in (("receptance", xr), ("key", xk), ("value", xv)))  # [B,L,H,P]
        gate = nn.silu(dense("gate", xg))  # [B, L, d]
        a_w = self.param("decay_down", nn.initializers.zeros, (d, self.decay_rank))
        b_w = self.param("decay_up", small, (self.decay_rank, d))
        dd = self.param("decay_base", decay_base_init, (d,)) + jnp.tanh(xw @ a_w) @ b_w
        log_w = -jnp.exp(dd).reshape(batch, length, heads, p)  # log w_t < 0: [B, L, H, P]
        if mask is not None:  # padded: no write, no decay
            k, v, log_w = rec.mask_keys(mask, k, v, log_w)
        u = self.param("bonus", bonus_init, (heads, p))  # [H, P]
        if self.mode == "chunked":
            out = wkv_chunked(r, k, v, log_w, u, self.chunk_size)  # [B, L, H, P]
        else:
            out, state = wkv_recurrent(r, k, v, log_w, u)
            self.sow("intermediates", "recurrent_state", (x32[:, -1], state))
        mean = out.mean(-1, keepdims=True)  # GroupNorm: per head and position
        var = jnp.square(out - mean).mean(-1, keepdims=True)
        out = ((out - mean) * jax.lax.rsqrt(var + 64e-5)).reshape(batch, length, d)
        out = out * self.param("norm_scale", nn.initializers.ones, (d,)) + self.param(
            "norm_bias", nn.initializers.zeros, (d,))
        return dense("output", out * gate).astype(x.dtype)  # [B, L, d]


VARIANT = RWKV6
