"""Sparsemax attention (and entmax-1.5): a normaliser that gives exact zeros.

Papers: Martins & Astudillo 2016, "From Softmax to Sparsemax: A Sparse Model of Attention and
Multi-Label Classification" (arXiv:1602.02068); for alpha = 1.5, Peters, Niculae & Martins 2019,
"Sparse Sequence-to-Sequence Models" (arXiv:1905.05702), entmax-1.5 and its exact sort-based
algorithm.
Idea: weights = sparsemax(q·kᵀ/√d), the Euclidean projection of the scores onto the simplex:
p_j = max(z_j - τ, 0) with τ chosen so Σ p = 1; low-scoring keys get exactly 0. τ comes from the
scores sorted in decreasing order z_(1) >= z_(2) >= ...: the support size is
k = max{j : 1 + j z_(j) > Σ_{i<=j} z_(i)} and τ = (Σ_{i<=k} z_(i) - 1) / k.
Entmax-1.5 (alpha = 1.5) is the softer member of the family: p_j = max(z_j / 2 - τ, 0)², with τ
again found exactly from the sorted prefix means and variances.
Hidden (padded / future) keys are excluded exactly: they sort after every visible key and the
prefix sums stop at the number of visible keys; their weight is exactly 0, and a query that sees
no key gets all-zero weights. Scores are shifted by their row maximum first (both maps are
shift-invariant), for float32 accuracy. Gradients are those of the closed form (autodiff through
the sort), which equal the sparsemax / entmax Jacobians.
Complexity: time O(L_q · L_k · (d + log L_k)) per head (the sort), memory O(L_q · L_k).
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from attnjax.attention._scored import ScoredAttention
from attnjax.attention.base import dense_flops, scaled_dot_logits

ALPHAS = (1.5, 2.0)


def _sorted_visible(logits, mask):
    """Common prelude: row-max shift and the visible scores sorted in decreasing order.

    logits [..., Lk] float32, mask broadcastable to it or None. Returns z (logits minus the
    row max over visible keys), zs (sorted decreasing; entries past the visible count are 0),
    valid ([..., Lk] rank <= visible count), rank (1..Lk) and the full-shape mask."""
    mask = jnp.ones(logits.shape, bool) if mask is None else jnp.broadcast_to(mask, logits.shape)
    count = jnp.sum(mask, axis=-1, keepdims=True)  # [..., 1] visible keys
    hidden = jnp.where(mask, logits, -jnp.inf)  # [..., Lk]
    top = jnp.where(count > 0, jnp.max(hidden, axis=-1, keepdims=True), 0.0)  # [..., 1]
    top = jax.lax.stop_gradient(top)  # the maps are shift-invariant
    z = logits - top  # [..., Lk]
    zs = jnp.flip(jnp.sort(jnp.where(mask, z, -jnp.inf), axis=-1), axis=-1)  # decreasing
    rank = jnp.arange(1, logits.shape[-1] + 1, dtype=jnp.float32)  # [Lk]
    valid = rank <= count  # [..., Lk]
    return z, jnp.where(valid, zs, 0.0), valid, rank, mask


def _at_support_end(x, support):
    """x [..., Lk] at index (support size - 1) along the last axis -> [..., 1]."""
    k = jnp.sum(support, axis=-1, keepdims=True)  # [..., 1]
    return jnp.take_along_axis(x, jnp.maximum(k - 1, 0), axis=-1)


def sparsemax(logits, mask=None):
    """Sparsemax over the last axis, hidden keys (mask False) excluded; float32."""
    z, zs, valid, rank, mask = _sorted_visible(logits.astype(jnp.float32), mask)
    cum = jnp.cumsum(zs, axis=-1)  # [..., Lk] Σ_{i<=j} z_(i)
    support = valid & (1.0 + rank * zs > cum)  # [..., Lk], a prefix of the ranks
    k = jnp.maximum(jnp.sum(support, axis=-1, keepdims=True), 1).astype(jnp.float32)
    tau = (_at_support_end(cum, support) - 1.0) / k  # [..., 1]
    return jnp.where(mask, jnp.maximum(z - tau, 0.0), 0.0)


def entmax15(logits, mask=None):
    """Entmax with alpha = 1.5 over the last axis (exact, sort-based), hidden keys excluded."""
    z, zs, valid, rank, mask = _sorted_visible(logits.astype(jnp.float32), mask)
    z, xs = z / 2.0, zs / 2.0  # (alpha - 1) · z
    mean = jnp.cumsum(xs, axis=-1) / rank  # [..., Lk] prefix means
    mean_sq = jnp.cumsum(xs * xs, axis=-1) / rank
    delta = (1.0 - rank * (mean_sq - mean * mean)) / rank  # [..., Lk]
    positive = delta > 0
    root = jnp.where(positive, jnp.sqrt(jnp.where(positive, delta, 1.0)), 0.0)  # safe gradient
    tau = mean - root  # [..., Lk] threshold if the support were the top j
    support = valid & (tau <= xs)  # [..., Lk], a prefix of the ranks
    tau = _at_support_end(tau, support)  # [..., 1]
    return jnp.where(mask, jnp.square(jnp.maximum(z - tau, 0.0)), 0.0)


class Sparsemax(ScoredAttention):
    """sparsemax(q kᵀ/√d) v (alpha = 2), or entmax-1.5 (alpha = 1.5).

    Attributes:
      alpha: 2.0 = sparsemax, 1.5 = entmax-1.5 (both exact, sort-based); nothing else.
    """

    alpha: float = 2.0
    small_settings: ClassVar[dict] = {}  # no structure to shrink

    def flops(self, q_len, kv_len, head_dim):
        # dense q·kᵀ and weights·v, plus the sort of each row (L_k · log2 L_k comparisons,
        # one FLOP each); the prefix sums and thresholds are elementwise and not counted.
        sort = q_len * kv_len * math.log2(max(kv_len, 2))
        return dense_flops(q_len, kv_len, head_dim) + sort

    def score(self, q, k):
        return scaled_dot_logits(q, k)  # [B, H, Lq, Lk]

    def normalizer(self, key_mask, kv_len):
        if self.alpha not in ALPHAS:
            raise ValueError(f"sparsemax alpha must be one of {ALPHAS}, got {self.alpha}")
        return sparsemax if self.alpha == 2.0 else entmax15


VARIANT = Sparsemax
