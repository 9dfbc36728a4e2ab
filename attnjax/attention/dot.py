"""Dot-product attention without scaling (Luong's "dot" score).

Paper: Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural Machine
Translation" (arXiv:1508.04025), the `dot` score of its global attention.
Idea: weights = softmax(q·kᵀ) over keys — scaled dot-product attention without the 1/√d
factor, so the logits grow with ‖q‖‖k‖ (and with head_dim) and the softmax saturates sooner.
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (reference path;
O(block² + L · d) on the default tiled path, see _scored.py).
"""

from __future__ import annotations

from attnjax.attention._scored import BlockwiseScored


class Dot(BlockwiseScored):
    """softmax(q kᵀ) v, unscaled; settings: implementation, block_size (BlockwiseScored)."""

    def features(self, q, k):
        return q, k, 1.0  # score = q·kᵀ


VARIANT = Dot
