"""Dot-product attention without scaling (Luong's "dot" score).

Paper: Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural Machine
Translation" (arXiv:1508.04025), the `dot` score of its global attention.
Idea: weights = softmax(q·kᵀ) over keys — scaled dot-product attention without the 1/√d
factor, so the logits grow with ‖q‖‖k‖ (and with head_dim) and the softmax saturates sooner.
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights.
"""

from __future__ import annotations

from attnjax.attention._scored import ScoredAttention, dot_logits


class Dot(ScoredAttention):
    """softmax(q kᵀ) v, unscaled; no settings."""

    def score(self, q, k):
        return dot_logits(q, k)  # [B, H, Lq, Lk]


VARIANT = Dot
