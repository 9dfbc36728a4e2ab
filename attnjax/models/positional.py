"""Positional information, absolute (added to embeddings) or relative (inside attention).

Absolute, added to the token embeddings:
  sinusoidal  Vaswani et al. 2017 (fixed sin/cos of geometric frequencies).
  learned     a trainable [max_length, d_model] table (GPT-2 / BERT style).
Relative, applied in every attention layer:
  rope        Su et al. 2021, RoFormer (arXiv:2104.09864): rotate q, k pairs by position.
  alibi       Press et al. 2022 (arXiv:2108.12409): logits bias −m_h · |i − j|, fixed slopes.
  t5_bias     Raffel et al. 2020, T5 (arXiv:1910.10683): learned per-head bias of log-spaced
              relative-distance buckets, shared by all layers.
none: nothing; the mixer must find order on its own (a causal mask does leak order).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

ABSOLUTE = ("sinusoidal", "learned")
RELATIVE = ("rope", "alibi", "t5_bias")
BIASES = ("alibi", "t5_bias")  # need variants with explicit logits
KINDS = (*ABSOLUTE, *RELATIVE, "none")


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """[length, d_model] float32: sin on even channels, cos on odd ones."""
    pos = np.arange(length, dtype=np.float64)[:, None]  # [L, 1]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-np.log(10_000.0) / d_model))
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * div)
    table[:, 1::2] = np.cos(pos * div[: d_model // 2])
    return table.astype(np.float32)


class AddPositional(nn.Module):
    """x [B, L, D] -> x + P[:L] for the absolute kinds; unchanged for the others."""

    kind: str
    max_length: int

    @nn.compact
    def __call__(self, x):
        length, d_model = x.shape[1], x.shape[2]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        if self.kind not in ABSOLUTE:
            return x
        if self.kind == "sinusoidal":
            table = jnp.asarray(sinusoidal_table(length, d_model))
        else:
            table = self.param(
                "embedding", nn.initializers.normal(0.02), (self.max_length, d_model)
            )[:length]
        return x + table[None].astype(x.dtype)  # [B, L, D]


def apply_rope(x, base: float = 10_000.0):
    """Rotary embedding of x [B, L, H, D] (D even): channel pairs (i, i + D/2) rotate by
    position · base^(−2i/D)."""
    length, dim = x.shape[1], x.shape[3]
    if dim % 2:
        raise ValueError(f"rope needs an even head_dim, got {dim}")
    freqs = base ** (-np.arange(0, dim // 2, dtype=np.float64) * 2.0 / dim)  # [D/2]
    angles = np.arange(length, dtype=np.float64)[:, None] * freqs[None]  # [L, D/2]
    cos = jnp.asarray(np.cos(angles), jnp.float32)[None, :, None, :]  # [1, L, 1, D/2]
    sin = jnp.asarray(np.sin(angles), jnp.float32)[None, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)  # [B, L, H, D/2] each
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """The paper's geometric slopes 2^(−8h/H), h = 1..H (for H a power of two; otherwise the
    paper's interleaving of the next power of two)."""
    def power_of_two(n):
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return np.asarray(power_of_two(num_heads), np.float32)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(power_of_two(closest) + extra, np.float32)


def alibi_bias(num_heads: int, q_len: int, kv_len: int):
    """[1, H, Lq, Lk] float32: −slope_h · |i − j| (the causal mask removes j > i anyway)."""
    distance = np.abs(np.arange(q_len)[:, None] - np.arange(kv_len)[None, :])  # [Lq, Lk]
    bias = -alibi_slopes(num_heads)[:, None, None] * distance[None]  # [H, Lq, Lk]
    return jnp.asarray(bias[None], jnp.float32)


def t5_buckets(q_len: int, kv_len: int, bidirectional: bool, num_buckets: int,
               max_distance: int) -> np.ndarray:
    """[Lq, Lk] int: T5's bucket of the relative position j − i (exact for small distances,
    log-spaced up to max_distance; the sign gets half the buckets when bidirectional)."""
    rel = np.arange(kv_len)[None, :] - np.arange(q_len)[:, None]  # [Lq, Lk] = j − i
    buckets = np.zeros_like(rel)
    n = num_buckets
    if bidirectional:
        n //= 2
        buckets += (rel > 0) * n
        rel = np.abs(rel)
    else:
        rel = -np.minimum(rel, 0)
    exact = n // 2
    with np.errstate(divide="ignore"):
        log_pos = exact + (np.log(np.maximum(rel, 1) / exact) / np.log(max_distance / exact)
                           * (n - exact)).astype(np.int64)
    log_pos = np.minimum(log_pos, n - 1)
    return buckets + np.where(rel < exact, rel, log_pos)


class T5Bias(nn.Module):
    """Learned [num_buckets, H] table -> bias [1, H, Lq, Lk] (one table shared by all layers)."""

    num_heads: int
    bidirectional: bool
    num_buckets: int = 32
    max_distance: int = 128

    @nn.compact
    def __call__(self, q_len: int, kv_len: int):
        table = self.param("table", nn.initializers.normal(0.02),
                           (self.num_buckets, self.num_heads))  # [NB, H]
        idx = t5_buckets(q_len, kv_len, self.bidirectional, self.num_buckets, self.max_distance)
        return jnp.transpose(table[jnp.asarray(idx)], (2, 0, 1))[None]  # [1, H, Lq, Lk]
