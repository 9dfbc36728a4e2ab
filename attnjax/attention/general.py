"""Bilinear ("general") attention score with a learned matrix per head.

Paper: Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural Machine
Translation" (arXiv:1508.04025), the `general` score of its global attention.
Idea: weights = softmax(q W kᵀ) with a learned W [head_dim, head_dim] for each head (Luong has
one W over the whole hidden state; one per head is the multi-head form). W is initialised to
I / √d exactly, so at initialisation the variant computes scaled dot-product attention; W then
learns an arbitrary (not necessarily symmetric) bilinear form.
Complexity per head: time O(L_q · d² + L_q · L_k · d) (q W first, then (q W)·kᵀ), memory
O(L_q · L_k) for the weights (O(block² + L · d) on the default tiled path, see _scored.py);
d² parameters per head.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from attnjax.attention._scored import BlockwiseScored


def scaled_identity(key, shape, dtype=jnp.float32):
    """[H, D, D]: I / √D for every head (deterministic; `key` is unused)."""
    heads, dim, _ = shape
    return jnp.broadcast_to(jnp.eye(dim, dtype=dtype) / math.sqrt(dim), (heads, dim, dim))


class General(BlockwiseScored):
    """softmax(q W kᵀ) v with W [H, d, d] in params["w"], initialised to I/√d; no settings."""

    def score_flops(self, q_len, kv_len, head_dim):
        return 2.0 * q_len * head_dim * head_dim  # q W

    def features(self, q, k):
        heads, dim = q.shape[2], q.shape[3]
        w = self.param("w", scaled_identity, (heads, dim, dim))  # [H, D, D]
        return jnp.einsum("bqhd,hde->bqhe", q, w), k, 1.0  # score = (q W)·kᵀ


VARIANT = General
