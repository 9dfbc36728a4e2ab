"""Additive (Bahdanau / "concat") attention score with learned per-head projections.

Paper: Bahdanau, Cho & Bengio 2014, "Neural Machine Translation by Jointly Learning to Align
and Translate" (arXiv:1409.0473).
Idea: score(q_i, k_j) = vᵀ tanh(W q_i + U k_j), a one-hidden-layer MLP on the pair, with learned
W, U [head_dim, attn_dim] and v [attn_dim] for each head; weights = softmax over keys.
Init: W, U ~ N(0, 1/head_dim), v ~ N(0, 1/attn_dim) (LeCun normal); Bahdanau et al. used
N(0, 0.001²) for W, U and v = 0, which starts with uniform weights. There is no bias term.
Complexity per head: time O((L_q + L_k) · d · a + L_q · L_k · a + L_q · L_k · d) (a = attn_dim;
the projections, the pairwise tanh and v-product, weights · v); memory O(L_q · L_k · a): the
tanh(W q_i + U k_j) tensor [B, H, L_q, L_k, a] is materialised (and kept for the backward
pass), so this is a·(4 bytes) times the memory of softmax attention — keep lengths modest.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention._scored import ScoredAttention

_lecun = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))


class Additive(ScoredAttention):
    """softmax(vᵀ tanh(W q + U k)) v_values, params["w"], ["u"] [H, d, a] and ["v"] [H, a].

    Attributes:
      attn_dim: a, the width of the hidden tanh layer; 0 means head_dim.
    """

    attn_dim: int = 0
    small_settings: ClassVar[dict] = {"attn_dim": 4}  # a != head_dim at test sizes

    def _width(self, head_dim: int) -> int:
        if self.attn_dim < 0:
            raise ValueError(f"additive attn_dim must be >= 0, got {self.attn_dim}")
        return self.attn_dim or head_dim

    def flops(self, q_len, kv_len, head_dim):
        a = self._width(head_dim)
        # W q and U k; per (query, key, unit): the add and tanh (1 each) and v· (2); weights · v.
        # There is no q·kᵀ product.
        projections = 2.0 * (q_len + kv_len) * head_dim * a
        return projections + 4.0 * q_len * kv_len * a + 2.0 * q_len * kv_len * head_dim

    def score(self, q, k):
        heads, dim = q.shape[2], q.shape[3]
        a = self._width(dim)
        w = self.param("w", _lecun, (heads, dim, a))  # [H, D, A]
        u = self.param("u", _lecun, (heads, dim, a))  # [H, D, A]
        v = self.param("v", nn.initializers.lecun_normal(in_axis=-1, out_axis=0), (heads, a))
        wq = jnp.einsum("bqhd,hda->bhqa", q, w)  # [B, H, Lq, A]
        uk = jnp.einsum("bkhd,hda->bhka", k, u)  # [B, H, Lk, A]
        hidden = jnp.tanh(wq[:, :, :, None, :] + uk[:, :, None, :, :])  # [B, H, Lq, Lk, A]
        return jnp.einsum("bhqka,ha->bhqk", hidden, v)  # [B, H, Lq, Lk]


VARIANT = Additive
