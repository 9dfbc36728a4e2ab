"""Based: Taylor-feature linear attention over the whole prefix plus exact sliding-window softmax
(or, with window_size = 0, the Taylor linear attention alone).

Paper: Arora et al. 2024, "Simple linear attention language models balance the recall-throughput
tradeoff" (arXiv:2402.18668).
Idea: two mixers over the same q, k, v, summed: out = linear + window.
  linear: q, k are projected per head to d' = `feature_dim` (learned [d, d'] per head) and mapped
    by the 2nd-order Taylor feature map φ(x) = [1, x / d'^(1/4), (x ⊗ x) / (√2 · √d')], so
    φ(q)·φ(k) = 1 + s + s²/2 with s = q·k / √d', the Taylor approximation of exp(s), always
    >= 1/2. Normalised linear attention: φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps),
    over all visible keys (causal: j <= i, by linear.py's chunked prefix sums).
  window: exact softmax(q·k / √d) attention over local.py's band: causal i - w < j <= i,
    non-causal |i - j| < w (w = `window_size`), computed in blocks of w queries that see only
    their own and neighbouring key blocks. w = 0: no window, out = linear (Zoology's figure-2
    Based, its `zoology.mixers.based.Based` with the Taylor map and no sliding window).
The paper stacks these as separate layers (plus gated convolutions) in a hybrid model; summing
them inside one attention layer is this framework's single-variant version.
Two causal forms (`mode`), equal up to rounding: 'chunked' (above) and 'recurrent' (a scan over
tokens with state S = Σ φ(k) vᵀ, z = Σ φ(k) and a cache of the last w keys and values).
Non-causal calls have one (parallel) form. Padded keys are zeroed out of the linear sums and
masked out of the window. A query that sees no key outputs 0.
Complexity per head (F = 1 + d' + d'² features): time O(L · d · d' + L · F · d + L · C · F +
L · w · d), memory O(L · F + (L / C) · F · d + L · w); decoding state F · (d + 1) + 2 · w · d
(the w terms vanish with w = 0).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention._kernel_features import causal_sums
from attnjax.attention.base import AttentionBase, Capabilities, masked_softmax, repeat_kv


def taylor_features(x):
    """φ(x) = [1, x / d^(1/4), (x ⊗ x) / (√2 · √d)]: [..., d] -> [..., 1 + d + d²]."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], d * d)  # [..., d²]
    ones = jnp.ones((*x.shape[:-1], 1), x.dtype)
    return jnp.concatenate([ones, x / d**0.25, outer / math.sqrt(2.0 * d)], axis=-1)


def window_softmax(q, k, v, real, window: int, causal: bool):
    """Softmax attention over local.py's band, in blocks of w = min(window, L) queries: query
    block n sees key blocks n-1, n (and n+1 if non-causal). q, k: [B, L, H, D], v: [B, L, H, E],
    real: [B, L] bool key mask. Returns [B, L, H, E]."""
    length, dim = q.shape[1], q.shape[3]
    size = min(window, length)
    qb, kb, vb, mb = (rec.to_chunks(x, size) for x in (q, k, v, real))  # [B, n, w, ...]
    shifts = (1, 0) if causal else (1, 0, -1)  # key block n - s for each shift s

    def neighbours(x):  # [B, n, w, ...] -> [B, n, S·w, ...]: blocks n - s side by side
        pad = [(0, 0), (1, 1)] + [(0, 0)] * (x.ndim - 2)  # zero (False) blocks at both ends
        x = jnp.pad(x, pad)
        n = x.shape[1] - 2
        return jnp.concatenate([x[:, 1 - s : 1 - s + n] for s in shifts], axis=2)

    kn, vn, mn = neighbours(kb), neighbours(vb), neighbours(mb)
    key_pos = jnp.concatenate([jnp.arange(size) - s * size for s in shifts])  # [S·w]
    offset = jnp.arange(size)[:, None] - key_pos[None, :]  # [w, S·w] = i - j
    band = (offset >= 0) & (offset < window) if causal else jnp.abs(offset) < window
    allowed = band & mn[:, :, None, None, :]  # [B, n, 1, w, S·w]
    logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, kn) / math.sqrt(dim)  # [B, n, H, w, S·w]
    weights = masked_softmax(logits, allowed)
    return rec.from_chunks(jnp.einsum("bnhqk,bnkhe->bnqhe", weights, vn), length)


def based_recurrent(fq, fk, q, k, v, real, window: int, eps: float):
    """Token scan of both parts. fq, fk: [B, L, H, F]; q, k: [B, L, H, D]; v: [B, L, H, E]
    (fk, v zeroed at padded keys); real: [B, L]. Returns ([B, L, H, E], the final state
    (S, z, keys, values, slot flags); (S, z) alone when `window` = 0: no window part)."""
    batch, _, heads, feats = fq.shape
    dim, dv = q.shape[-1], v.shape[-1]
    dtype = rec.compute_dtype(q, v)
    init = (
        jnp.zeros((batch, heads, feats, dv), dtype),  # S = Σ φ(k) vᵀ
        jnp.zeros((batch, heads, feats), dtype),  # z = Σ φ(k)
        jnp.zeros((batch, window, heads, dim), dtype),  # last w keys
        jnp.zeros((batch, window, heads, dv), dtype),  # last w values
        jnp.zeros((batch, window), bool),  # which cache slots hold a real key
    )[: 5 if window else 2]

    def push(cache, x):  # drop the oldest slot, append x
        return jnp.concatenate([cache[:, 1:], x[:, None]], axis=1)

    def step(state, x):
        s, z, *cache = state
        fq_t, fk_t, q_t, k_t, v_t, m_t = x
        s = s + fk_t[..., :, None] * v_t[:, :, None, :]  # [B, H, F, E]
        z = z + fk_t  # [B, H, F]
        num = jnp.einsum("bhf,bhfe->bhe", fq_t, s)
        linear = num / (jnp.einsum("bhf,bhf->bh", fq_t, z)[..., None] + eps)
        if not window:
            return (s, z), linear
        kc, vc, mc = cache
        kc, vc, mc = push(kc, k_t), push(vc, v_t), push(mc, m_t)
        logits = jnp.einsum("bhd,bwhd->bhw", q_t, kc) / math.sqrt(dim)  # [B, H, w]
        weights = masked_softmax(logits, mc[:, None, :])
        return (s, z, kc, vc, mc), linear + jnp.einsum("bhw,bwhe->bhe", weights, vc)

    state, out = rec.scan_sequence(step, init, (fq, fk, q, k, v, real))
    return out, state


class Based(AttentionBase):
    """Taylor linear attention (global) + sliding-window softmax attention (local), summed;
    window_size = 0: the Taylor linear attention alone.

    Attributes:
      mode: causal form, 'chunked' (training) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the causal linear part's prefix sums.
      feature_dim: d', the per-head projection of q and k before the Taylor map (F = 1+d'+d'²).
      window_size: w of the softmax part; w >= L gives full softmax attention; 0 = no
        softmax part (pure Taylor linear attention, Zoology's figure-2 Based).
      eps: added to the linear part's normaliser (a query with no visible key gives 0).
    """

    mode: str = "chunked"
    chunk_size: int = 64
    feature_dim: int = 16
    window_size: int = 64
    eps: float = 1e-6
    small_settings: ClassVar[dict] = {"chunk_size": 5, "feature_dim": 4, "window_size": 4}
    # sows (S, z, last w keys, last w values, w slot flags), (S, z) with w = 0; the flags
    # (booleans, equivalent to a token counter) are bookkeeping, not floats, so state_size
    # leaves them out
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}

    # the window needs query and key positions on one axis: no cross attention
    capabilities = Capabilities(cross_attention=False)

    def _features(self) -> int:
        return 1 + self.feature_dim + self.feature_dim**2

    def flops(self, q_len, kv_len, head_dim):
        f, d = self._features(), head_dim
        proj = 4.0 * (q_len + kv_len) * d * self.feature_dim  # q, k -> d'
        state = 2.0 * (q_len + kv_len) * f * (d + 1)  # Σ φ(k) vᵀ, Σ φ(k) and their read-out
        if self.mode == "chunked":  # + the C x C intra-chunk products
            state += 4.0 * q_len * min(self.chunk_size, q_len) * f
        w = min(self.window_size, q_len)  # 0 without a window: linear part only
        # chunked: each query block against two key blocks (causal; three non-causal);
        # recurrent: each query against the w cached keys
        keys = w if self.mode == "recurrent" else 2 * w
        return proj + state + 4.0 * q_len * keys * d

    def state_size(self, head_dim):  # S and z, plus the window's key/value cache (w = 0: none)
        return self._features() * (head_dim + 1) + 2 * self.window_size * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("based", self.mode, self.chunk_size)
        if self.window_size < 0 or self.feature_dim < 1:
            raise ValueError(f"based needs window_size >= 0 (0 = no window) and feature_dim "
                             f">= 1, got {self.window_size} and {self.feature_dim}")
        batch, length, heads, dim = q.shape
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        q32 = q.astype(dtype)  # [B, L, H, D]
        k32 = repeat_kv(k.astype(dtype), heads)  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]
        real = jnp.ones((batch, length), bool) if mask is None else mask  # [B, L]

        init = nn.initializers.lecun_normal(batch_axis=(0,))  # fan-in per head
        shape = (heads, dim, self.feature_dim)
        wq, wk = self.param("q_feature", init, shape), self.param("k_feature", init, shape)
        fq = taylor_features(jnp.einsum("blhd,hdf->blhf", q32, wq))  # [B, L, H, F]
        fk = taylor_features(jnp.einsum("blhd,hdf->blhf", k32, wk))  # [B, L, H, F]
        fk, v_lin = rec.mask_keys(mask, fk, v32)  # padded keys: out of the linear sums

        if causal and self.mode == "recurrent":
            out, state = based_recurrent(fq, fk, q32, k32, v_lin, real, self.window_size,
                                         self.eps)
            self.sow("intermediates", "recurrent_state", state)
            return out.astype(q.dtype)
        if causal:
            num, den = causal_sums(fq, fk, v_lin, self.chunk_size)  # [B,L,H,E], [B,L,H]
        else:
            state = jnp.einsum("bmhf,bmhe->bhfe", fk, v_lin)  # Σ φ(k) vᵀ: [B, H, F, E]
            num = jnp.einsum("blhf,bhfe->blhe", fq, state)  # [B, L, H, E]
            den = jnp.einsum("blhf,bhf->blh", fq, fk.sum(axis=1))  # φ(q) · Σ φ(k)
        linear = num / (den[..., None] + self.eps)  # [B, L, H, E]
        if not self.window_size:
            return linear.astype(q.dtype)
        window = window_softmax(q32, k32, v32, real, self.window_size, causal)  # [B, L, H, E]
        return (linear + window).astype(q.dtype)


VARIANT = Based
