"""Memory-efficient attention in plain JAX: the score matrix one [query block, key block] tile at
a time, forward and backward, so no [L_q, L_k] array is ever held.

Papers: Rabe & Staats 2021, "Self-attention Does Not Need O(n²) Memory" (arXiv:2112.05682);
Dao et al. 2022 / Dao 2023, FlashAttention(-2) (arXiv:2205.14135, 2307.08691): the online
softmax over key blocks, and a backward pass that recomputes each tile from q, k, v and the
saved per-query log-sum-exp instead of storing the weights.

    blockwise_attention(q, k, v, mask=..., causal=..., bias=..., kind="softmax") -> [B, Lq, H, E]

Weights per tile, from logits t = cap(scale · q·kᵀ + bias) (cap: optional soft-capping):
  kind="softmax": softmax over every visible key (online: running max, sum and output);
  kind="sigmoid": σ(t + row_offset) · row_scale;  kind="relu": relu(t + row_offset)^power ·
  row_scale — no normaliser over keys, so the output is a plain sum over key blocks.
Hidden keys (padding mask, causal j > i, or keys added to round L_k up to the block) are
excluded before any exponential, so they have exactly zero influence; a query with no visible
key outputs 0. Tiles with no visible key at all (above the causal diagonal, fully padded
blocks) are skipped with `lax.cond` (under `vmap` both branches run: same result, less saving).

Memory: O(block² + L · d) per (batch, head) in the forward and the backward (a custom VJP that
saves only q, k, v, the output and one log-sum-exp per query); the bias gradient, when a bias
is given, has the bias's own size. Attention dropout is not implemented here (callers route
dropout to their reference path). Complexity: time O(L_q · L_k · d), as the dense form; causal
saves about half of it by skipping tiles.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.attention.base import repeat_kv

KINDS = ("softmax", "sigmoid", "relu")
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static settings of one call (hashable: a nondiff argument of the custom VJP)."""

    kind: str
    causal: bool
    scale: float
    soft_cap: float
    power: int
    q_block: int
    k_block: int


# ------------------------------------------------------------------ tiles


def _rows(x, i, size):
    """x[..., i-th block of `size` along axis 2, ...], or x itself if that axis is broadcast."""
    if x is None or x.shape[2] == 1:
        return x
    return lax.dynamic_slice_in_dim(x, i * size, size, axis=2)


def _cols(x, j, size, axis):
    return None if x is None else lax.dynamic_slice_in_dim(x, j * size, size, axis=axis)


def _logits(spec, q_i, k_j, bias_ij):
    """t = cap(scale · q_i k_jᵀ + bias) [B, H, bq, bk] float32, and s before the cap."""
    s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j, preferred_element_type=F32) * spec.scale
    if bias_ij is not None:
        s = s + bias_ij.astype(F32)
    t = spec.soft_cap * jnp.tanh(s / spec.soft_cap) if spec.soft_cap > 0 else s
    return t


def _visible(spec, valid_j, i, j):
    """[B|1, 1, bq, bk] bool: key j visible to query i (padding, causal, block round-up)."""
    visible = valid_j[:, None, None, :]
    if spec.causal:
        q_pos = i * spec.q_block + jnp.arange(spec.q_block)
        k_pos = j * spec.k_block + jnp.arange(spec.k_block)
        visible = visible & (k_pos[None, :] <= q_pos[:, None])
    return visible


def _live(spec, valid_j, i, j):
    """Whether tile (i, j) has any visible (query, key) pair; others are skipped."""
    live = jnp.any(valid_j)
    if spec.causal:  # the tile's first key must not be after its last query
        live = live & (j * spec.k_block <= i * spec.q_block + spec.q_block - 1)
    return live


def _shift(x, offset):
    return x if offset is None else x + offset


def _times(x, scale):
    return x if scale is None else x * scale


def _elementwise(spec, z):
    """(g(z), g'(z)) for the unnormalised kinds."""
    if spec.kind == "sigmoid":
        g = jax.nn.sigmoid(z)
        return g, g * (1.0 - g)
    r = jnp.maximum(z, 0.0)
    if spec.power == 1:
        return r, (z > 0).astype(F32)
    return r**spec.power, spec.power * r ** (spec.power - 1)


# ------------------------------------------------------------------ forward


def _forward(spec, q, k, v, key_valid, bias, row_offset, row_scale):
    """q [B, H, Lq', D], k [B, H, Lk', D], v [B, H, Lk', E] (lengths multiples of the blocks)
    -> (out float32 [B, H, Lq', E], lse float32 [B, H, Lq'])."""
    batch, heads, q_len, _ = q.shape
    value_dim = v.shape[-1]
    bq, bk = spec.q_block, spec.k_block
    softmax = spec.kind == "softmax"

    def query_block(i):
        q_i = _rows(q, i, bq)  # [B, H, bq, D]
        bias_i, off_i, scale_i = (_rows(x, i, bq) for x in (bias, row_offset, row_scale))

        def key_step(carry, j):
            valid_j = _cols(key_valid, j, bk, axis=1)  # [B|1, bk]

            def compute(carry):
                m, total, acc = carry
                k_j, v_j = _cols(k, j, bk, 2), _cols(v, j, bk, 2)  # [B, H, bk, D|E]
                t = _logits(spec, q_i, k_j, _cols(bias_i, j, bk, 3))  # [B, H, bq, bk]
                visible = _visible(spec, valid_j, i, j)
                if softmax:
                    t = jnp.where(visible, t, -jnp.inf)
                    m_new = jnp.maximum(m, jnp.max(t, axis=-1))  # [B, H, bq]
                    m_use = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # no key yet: any finite
                    alpha = jnp.exp(m - m_use)  # rescales what was summed so far
                    p = jnp.exp(t - m_use[..., None])  # exact 0 at hidden keys
                    total = alpha * total + jnp.sum(p, axis=-1)
                    acc = alpha[..., None] * acc
                else:
                    g, _ = _elementwise(spec, _shift(t, off_i))
                    p = jnp.where(visible, _times(g, scale_i), 0.0)
                acc = acc + jnp.einsum("bhqk,bhke->bhqe", p.astype(v.dtype), v_j,
                                       preferred_element_type=F32)
                return (m_new if softmax else m), total, acc

            return lax.cond(_live(spec, valid_j, i, j), compute, lambda c: c, carry), None

        init = (jnp.full((batch, heads, bq), -jnp.inf, F32), jnp.zeros((batch, heads, bq), F32),
                jnp.zeros((batch, heads, bq, value_dim), F32))
        (m, total, acc), _ = lax.scan(key_step, init, jnp.arange(k.shape[2] // bk))
        if not softmax:
            return acc, jnp.zeros_like(total)
        seen = total > 0  # False: the query sees no key -> output 0
        safe_l = jnp.where(seen, total, 1.0)
        out = jnp.where(seen[..., None], acc / safe_l[..., None], 0.0)
        lse = jnp.where(seen, jnp.where(m == -jnp.inf, 0.0, m) + jnp.log(safe_l), 0.0)
        return out, lse

    out, lse = lax.map(query_block, jnp.arange(q_len // bq))  # [nq, B, H, bq, E], [nq, B, H, bq]
    out = jnp.moveaxis(out, 0, 2).reshape(batch, heads, q_len, value_dim)
    lse = jnp.moveaxis(lse, 0, 2).reshape(batch, heads, q_len)
    return out, lse


# ------------------------------------------------------------------ backward


def _reduce_to(x, shape):
    """Sum x [B, H, bq, bk] over the axes where `shape` (a bias tile's) broadcasts."""
    axes = tuple(a for a in range(3) if shape[a] == 1 and x.shape[a] != 1)
    return jnp.sum(x, axis=axes, keepdims=True) if axes else x


def _backward(spec, residuals, d_out):
    q, k, v, key_valid, bias, row_offset, row_scale, out, lse = residuals
    batch, heads, q_len, dim = q.shape
    kv_len, value_dim = k.shape[2], v.shape[-1]
    bq, bk = spec.q_block, spec.k_block
    nq, nk = q_len // bq, kv_len // bk
    softmax = spec.kind == "softmax"
    d_out = d_out.astype(F32)
    delta = jnp.sum(d_out * out, axis=-1) if softmax else None  # [B, H, Lq'] rowsum(dO ⊙ O)
    bias_tile = None if bias is None else (*bias.shape[:2], 1 if bias.shape[2] == 1 else bq, bk)

    def query_block(carry, i):
        dk, dv = carry  # float32 [B, H, Lk', D], [B, H, Lk', E]
        q_i, do_i = _rows(q, i, bq), _rows(d_out, i, bq)  # [B, H, bq, D], [B, H, bq, E]
        lse_i, delta_i = _rows(lse[..., None], i, bq), _rows(
            None if delta is None else delta[..., None], i, bq)  # [B, H, bq, 1]
        bias_i, off_i, scale_i = (_rows(x, i, bq) for x in (bias, row_offset, row_scale))

        def key_step(dq_i, j):
            valid_j = _cols(key_valid, j, bk, axis=1)

            def compute(dq_i):
                k_j, v_j = _cols(k, j, bk, 2), _cols(v, j, bk, 2)
                t = _logits(spec, q_i, k_j, _cols(bias_i, j, bk, 3))  # [B, H, bq, bk]
                visible = _visible(spec, valid_j, i, j)
                dp = jnp.einsum("bhqe,bhke->bhqk", do_i, v_j, preferred_element_type=F32)
                if softmax:
                    p = jnp.where(visible, jnp.exp(t - lse_i), 0.0)  # the forward's weights
                    ds = p * (dp - delta_i)
                else:
                    g, dg = _elementwise(spec, _shift(t, off_i))
                    p = jnp.where(visible, _times(g, scale_i), 0.0)
                    ds = jnp.where(visible, _times(dp * dg, scale_i), 0.0)
                dv_j = jnp.einsum("bhqk,bhqe->bhke", p, do_i)  # [B, H, bk, E]
                if spec.soft_cap > 0:  # d cap(s)/ds = 1 - tanh² = 1 - (t / cap)²
                    ds = ds * (1.0 - jnp.square(t / spec.soft_cap))
                d_bias = None if bias is None else _reduce_to(ds, bias_tile)
                ds = ds * spec.scale
                dq_i = dq_i + jnp.einsum("bhqk,bhkd->bhqd", ds, k_j.astype(F32))
                dk_j = jnp.einsum("bhqk,bhqd->bhkd", ds, q_i.astype(F32))  # [B, H, bk, D]
                return dq_i, (dk_j, dv_j, d_bias)

            def skip(dq_i):
                zeros = (jnp.zeros((batch, heads, bk, dim), F32),
                         jnp.zeros((batch, heads, bk, value_dim), F32),
                         None if bias is None else jnp.zeros(bias_tile, F32))
                return dq_i, zeros

            return lax.cond(_live(spec, valid_j, i, j), compute, skip, dq_i)

        dq_i, (dk_i, dv_i, d_bias_i) = lax.scan(
            key_step, jnp.zeros((batch, heads, bq, dim), F32), jnp.arange(nk))
        dk = dk + jnp.moveaxis(dk_i, 0, 2).reshape(dk.shape)  # [nk, B, H, bk, D] -> [B, H, Lk', D]
        dv = dv + jnp.moveaxis(dv_i, 0, 2).reshape(dv.shape)
        return (dk, dv), (dq_i, d_bias_i)

    init = (jnp.zeros((batch, heads, kv_len, dim), F32),
            jnp.zeros((batch, heads, kv_len, value_dim), F32))
    (dk, dv), (dq, d_bias) = lax.scan(query_block, init, jnp.arange(nq))
    dq = jnp.moveaxis(dq, 0, 2).reshape(q.shape)  # [nq, B, H, bq, D] -> [B, H, Lq', D]
    if bias is not None:  # [nq, nk, bB, bH, bq|1, bk] -> the bias's shape
        if bias.shape[2] == 1:
            d_bias = jnp.sum(d_bias, axis=0)[None]
        d_bias = jnp.transpose(d_bias, (2, 3, 0, 4, 1, 5)).reshape(bias.shape).astype(bias.dtype)
    # key_valid (bool) and the row offsets / scales (functions of the mask) get no gradient
    return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, d_bias, None, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(spec, q, k, v, key_valid, bias, row_offset, row_scale):
    return _forward(spec, q, k, v, key_valid, bias, row_offset, row_scale)[0]


def _attend_fwd(spec, q, k, v, key_valid, bias, row_offset, row_scale):
    out, lse = _forward(spec, q, k, v, key_valid, bias, row_offset, row_scale)
    return out, (q, k, v, key_valid, bias, row_offset, row_scale, out, lse)


_attend.defvjp(_attend_fwd, _backward)


# ------------------------------------------------------------------ the entry point


def _pad_axis(x, axis, size, value=0):
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def blockwise_attention(q, k, v, *, mask=None, causal=False, bias=None, scale=None,
                        soft_cap=0.0, kind="softmax", power=1, row_offset=None, row_scale=None,
                        block_size=512):
    """Attention with weights computed tile by tile; returns float32 [B, Lq, H, E].

    q [B, Lq, H, D], k [B, Lk, KV, D], v [B, Lk, KV, E] (KV divides H: GQA); mask: boolean
    key-padding mask [B, Lk] (True = real key) or None; causal: key j visible to query i iff
    j <= i; bias: additive logits bias broadcastable to [B, H, Lq, Lk] (ALiBi, T5); scale:
    logits multiplier (default 1/√D); soft_cap > 0: t -> cap · tanh(t / cap) after the bias;
    kind/power/row_offset/row_scale: the weights (see the module doc), row_offset and row_scale
    broadcastable to [B, 1, Lq, 1] and treated as constants (no gradient).
    """
    if kind not in KINDS:
        raise ValueError(f"blockwise attention kind must be one of {KINDS}, got {kind!r}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    _, q_len, heads, dim = q.shape
    kv_len = k.shape[1]
    bq, bk = min(block_size, q_len), min(block_size, kv_len)
    q_pad, kv_pad = -(-q_len // bq) * bq, -(-kv_len // bk) * bk
    spec = _Spec(kind, bool(causal), float(1.0 / math.sqrt(dim) if scale is None else scale),
                 float(soft_cap), int(power), bq, bk)

    def heads_first(x, length):  # [B, L, H, D] -> [B, H, L', D], zero rows past the length
        return _pad_axis(jnp.swapaxes(x, 1, 2), 2, length)

    q4 = heads_first(q, q_pad)
    k4, v4 = (heads_first(repeat_kv(x, heads), kv_pad) for x in (k, v))
    key_valid = (jnp.arange(kv_pad) < kv_len)[None]  # [1, Lk']
    if mask is not None:
        key_valid = key_valid & _pad_axis(jnp.asarray(mask, bool), 1, kv_pad, False)
    if bias is not None:  # [bB, bH, Lq|1, Lk'] (the key axis made full so tiles can slice it)
        bias = jnp.asarray(bias)
        bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
        bias = jnp.broadcast_to(bias, (*bias.shape[:3], kv_len))
        bias = _pad_axis(_pad_axis(bias, 3, kv_pad), 2, q_pad)
    rows = []
    for x, fill in ((row_offset, 0.0), (row_scale, 1.0)):
        if x is not None:
            x = jnp.asarray(x, F32)
            x = lax.stop_gradient(x.reshape((1,) * (4 - x.ndim) + x.shape))
            x = _pad_axis(x, 2, q_pad, fill)
        rows.append(x)
    out = _attend(spec, q4, k4, v4, key_valid, bias, *rows)  # [B, H, Lq', E]
    return jnp.swapaxes(out[:, :, :q_len], 1, 2)  # [B, Lq, H, E]
