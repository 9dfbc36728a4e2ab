"""Cosine-similarity attention with a learned temperature per head.

Paper: Liu et al. 2021, "Swin Transformer V2: Scaling Up Capacity and Resolution"
(arXiv:2111.09883), scaled cosine attention; the same idea as QK-norm in Henry et al. 2020,
"Query-Key Normalization for Transformers" (arXiv:2010.04245).
Idea: weights = softmax(τ · cos(q_i, k_j)) with τ = exp(min(log_scale, log(max_scale))) and a
learned log_scale per head, initialised to log(init_scale). As in Swin-V2: init τ = 10, τ
clamped to at most 100. The logits are bounded by τ, so attention cannot saturate from large
q/k norms, and the output is invariant to rescaling q or k. A zero vector has cosine 0 with
everything: vectors are divided by max(‖x‖, eps).
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (reference path;
O(block² + L · d) on the default tiled path, see _scored.py).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from attnjax.attention._scored import BlockwiseScored, dot_logits


def l2_normalize(x, eps: float):
    """x / max(‖x‖, eps) over the last axis (finite gradient at x = 0)."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(sq, eps * eps))


class Cosine(BlockwiseScored):
    """softmax(τ_h · cos(q, k)) v with τ_h = exp(min(log_scale_h, log max_scale)).

    Attributes:
      init_scale: τ at initialisation (Swin-V2: 10); params["log_scale"] [H] starts at its log.
      max_scale: upper clamp on τ (Swin-V2: 1 / 0.01 = 100); the gradient stops above it.
      eps: lower bound on ‖q‖, ‖k‖ when normalising.
    """

    init_scale: float = 10.0
    max_scale: float = 100.0
    eps: float = 1e-6

    def score_flops(self, q_len, kv_len, head_dim):
        return 2.0 * (q_len + kv_len) * head_dim  # ‖q‖, ‖k‖ and the division by them

    def _tau(self, heads):
        log_scale = self.param(
            "log_scale", lambda _, shape: jnp.full(shape, math.log(self.init_scale)), (heads,)
        )  # [H]
        return jnp.exp(jnp.minimum(log_scale, math.log(self.max_scale)))  # [H]

    def score(self, q, k):
        tau = self._tau(q.shape[2])
        cos = dot_logits(l2_normalize(q, self.eps), l2_normalize(k, self.eps))  # [B, H, Lq, Lk]
        return cos * tau[:, None, None]

    def features(self, q, k):  # τ folded into the queries: (τ q̂)·k̂ᵀ
        tau = self._tau(q.shape[2])
        return l2_normalize(q, self.eps) * tau[:, None], l2_normalize(k, self.eps), 1.0


VARIANT = Cosine
