"""Shared machinery of the feature-map linear attentions (performer, cosformer).

Both compute, per head,

    out_i = Σ_j κ(q_i, k_j) v_j / (Σ_j κ(q_i, k_j) + eps),   κ(q_i, k_j) = fq_i · fk_j · exp(a_j)

with non-negative features fq [.., F], fk [.., F] and an optional per-key log-scale a_j
(Performer's key stabiliser; none for cosFormer). The sum runs over all keys (non-causal) or
over j <= i (causal). Padded keys must come in with fk = v = 0 (`zero_padded`) and a = NEG.

Stabilisation: num and den are both returned multiplied by exp(-M_i), M_i = max of a_j over the
keys query i sees (non-causal: all unpadded keys; causal: unpadded j <= i), so every exponent
taken is <= 0 and nothing overflows. exp(-M_i) is common to num_i and den_i, so it cancels in
num / den (up to the eps term); M_i never reads a future or padded key, so causality and padding
stay exact. The log-scales are constants for autodiff (stop_gradient): they cancel.

Causal form: chunks of C keys. Within a chunk, a C x C causal product of features, each pair
weighted by exp(a_j - M_i) <= 1. Across chunks, each chunk's state (Σ fk vᵀ, Σ fk) is kept
relative to the chunk's largest log-scale, and a scan over the chunks carries the state of all
earlier chunks (running max, sum rescaled to it): an exclusive prefix sum in log-scaled form, the
RNN over chunks (L / C sequential steps).
Cost per head (F features, value size E): time O(L · C · (F + E) + L · F · E), memory
O(L · C + (L / C) · F · E).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG = jnp.finfo(jnp.float32).min  # log-scale of a padded key: exp(NEG - anything) = 0


def zero_padded(mask, *xs):
    """Zeros xs [B, Lk, ...] at padded keys (mask [B, Lk], True = real); mask None: unchanged."""
    if mask is None:
        return xs
    return tuple(jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0.0) for x in xs)


def normalise(num, den, eps: float = 0.0):
    """num [B, L, H, E] / (den [B, L, H] + eps); eps = 0: exact division where den > 0. Either
    way a query that sees no key (num = den = 0) gives 0, never NaN."""
    den = den[..., None] + eps  # [B, L, H, 1]
    if eps > 0:
        return num / den
    positive = den > 0
    return jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)


def kernel_flops(q_len: int, kv_len: int, features: int, head_dim: int, chunk: int) -> float:
    """FLOPs of the sums above with F features: state Σ fk (vᵀ, 1) and read-out fq · state,
    2 · (Lq + Lk) · F · (d + 1), plus the causal form's C x C intra-chunk products (scores over F
    features, then values), 2 · Lq · C · (F + d). `flops` has no causal argument, so the chunk
    term is always counted (as `linear` does)."""
    state = 2.0 * (q_len + kv_len) * features * (head_dim + 1)
    return state + 2.0 * q_len * min(chunk, q_len) * (features + head_dim)


def noncausal_sums(fq, fk, v, log_scale=None):
    """fq [B, Lq, H, F], fk [B, Lk, H, F], v [B, Lk, H, E], log_scale [B, Lk, H] or None.

    Returns (num [B, Lq, H, E], den [B, Lq, H]), both times exp(-max_j a_j) (see module doc).
    """
    if log_scale is not None:
        a = jax.lax.stop_gradient(log_scale)  # [B, Lk, H]
        top = a.max(axis=1, keepdims=True)  # [B, 1, H]; NEG when every key is padded
        fk = fk * jnp.exp(a - top)[..., None]  # [B, Lk, H, F]
    state = jnp.einsum("bkhf,bkhe->bhfe", fk, v)  # [B, H, F, E]
    norm = fk.sum(axis=1)  # [B, H, F]
    num = jnp.einsum("bqhf,bhfe->bqhe", fq, state)  # [B, Lq, H, E]
    den = jnp.einsum("bqhf,bhf->bqh", fq, norm)  # [B, Lq, H]
    return num, den


def _combine(left, right):
    """Merge two (max log-scale, Σ fk vᵀ, Σ fk) states, each relative to its own max: the result
    is relative to the larger one (both factors <= 1)."""
    (m1, s1, z1), (m2, s2, z2) = left, right
    m = jnp.maximum(m1, m2)  # [B, H]
    f1, f2 = jnp.exp(m1 - m), jnp.exp(m2 - m)
    s = s1 * f1[..., None, None] + s2 * f2[..., None, None]  # [B, H, F, E]
    z = z1 * f1[..., None] + z2 * f2[..., None]  # [B, H, F]
    return m, s, z


def causal_sums(fq, fk, v, chunk: int, log_scale=None):
    """Σ_{j<=i} over a sequence of chunks; fq, fk [B, L, H, F], v [B, L, H, E], log_scale
    [B, L, H] or None (= 0). Returns (num [B, L, H, E], den [B, L, H]), both times exp(-M_i),
    M_i = max_{j<=i} a_j (see module doc)."""
    batch, length, heads, _ = fq.shape
    chunk = min(chunk, length)
    n = -(-length // chunk)  # number of chunks
    if log_scale is None:
        log_scale = jnp.zeros((batch, length, heads), jnp.float32)
    a = jax.lax.stop_gradient(log_scale)

    def split(x, fill=0.0):  # [B, L, H, ...] -> [B, n, C, H, ...]; extra keys: fk = v = 0
        pad = [(0, 0), (0, n * chunk - length)] + [(0, 0)] * (x.ndim - 2)
        return jnp.pad(x, pad, constant_values=fill).reshape(batch, n, chunk, *x.shape[2:])

    fq, fk, v, a = split(fq), split(fk), split(v), split(a, NEG)  # a: [B, n, C, H]

    # Per-chunk states, relative to the chunk's largest log-scale; exclusive prefix over chunks.
    top = a.max(axis=2)  # [B, n, H]
    wk = fk * jnp.exp(a - top[:, :, None])[..., None]  # [B, n, C, H, F]
    chunk_s = jnp.einsum("bnshf,bnshe->bnhfe", wk, v)  # [B, n, H, F, E]
    chunk_z = wk.sum(axis=2)  # [B, n, H, F]

    def step(before, this):  # carry: the state of all earlier chunks; emit it, then add this
        return _combine(before, this), before

    first = (jnp.full_like(top[:, 0], NEG), jnp.zeros_like(chunk_s[:, 0]),
             jnp.zeros_like(chunk_z[:, 0]))  # no earlier chunk
    chunks = tuple(jnp.moveaxis(x, 1, 0) for x in (top, chunk_s, chunk_z))  # scan over n
    _, prev = jax.lax.scan(step, first, chunks)
    prev_m, prev_s, prev_z = (jnp.moveaxis(x, 0, 1) for x in prev)  # [B,n,H], [B,n,H,F,E], ..

    # Stabiliser M_i of each query: earlier chunks and keys up to i in its own chunk.
    m = jnp.maximum(prev_m[:, :, None], jax.lax.cummax(a, axis=2))  # [B, n, C, H]

    # Within the chunk: pair weights exp(a_j - M_i) <= 1 for j <= i, exactly 0 for j > i.
    tri = jnp.tril(jnp.ones((chunk, chunk), dtype=bool))[:, None, :]  # [C, 1, C]
    rel = jnp.swapaxes(a, 2, 3)[:, :, None] - m[..., None]  # [B, n, C, H, C]: a_j - M_i
    pair = jnp.exp(jnp.where(tri, rel, -jnp.inf))  # [B, n, C, H, C]
    scores = jnp.einsum("bnchf,bnshf->bnchs", fq, fk) * pair  # [B, n, C, H, C]
    num = jnp.einsum("bnchs,bnshe->bnche", scores, v)  # [B, n, C, H, E]
    den = scores.sum(axis=-1)  # [B, n, C, H]

    # Earlier chunks: their state is relative to prev_m <= M_i.
    back = jnp.exp(prev_m[:, :, None] - m)  # [B, n, C, H]
    num = num + back[..., None] * jnp.einsum("bnchf,bnhfe->bnche", fq, prev_s)
    den = den + back * jnp.einsum("bnchf,bnhf->bnch", fq, prev_z)

    num = num.reshape(batch, n * chunk, heads, -1)[:, :length]  # [B, L, H, E]
    den = den.reshape(batch, n * chunk, heads)[:, :length]  # [B, L, H]
    return num, den
