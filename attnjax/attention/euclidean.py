"""Negative squared Euclidean distance (L2) attention score.

Paper: Kim, Papamakarios & Mnih 2021, "The Lipschitz Constant of Self-Attention"
(arXiv:2006.04710), L2 self-attention.
Idea: weights = softmax(-‖q_i - k_j‖² / √d): keys close to the query get the most weight.
Kim et al. also tie the query and key projections (W_Q = W_K) to make the map Lipschitz; here
q and k come from the model's usual separate projections, so only the score is L2.
The score is computed as (2 q·k - ‖q‖² - ‖k‖²) / √d, a matmul plus two norms, instead of
materialising the [L_q, L_k, d] differences. (The ‖q‖² term is constant along a row and cancels in
the softmax, but is kept so the logits are the true distances for bias and soft-capping.)
The tiled path (default, see _scored.py) uses the same expansion as one dot product of
augmented vectors: q' = [2q, -‖q‖², -1], k' = [k, 1, ‖k‖²].
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (reference path;
O(block² + L · d) on the tiled path).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.attention._scored import BlockwiseScored, dot_logits


class Euclidean(BlockwiseScored):
    """softmax(-‖q - k‖² / √d) v; no settings."""

    def score_flops(self, q_len, kv_len, head_dim):
        return 2.0 * (q_len + kv_len) * head_dim  # ‖q‖², ‖k‖²

    def score(self, q, k):
        q_sq = jnp.sum(q * q, axis=-1).transpose(0, 2, 1)[..., :, None]  # [B, H, Lq, 1]
        k_sq = jnp.sum(k * k, axis=-1).transpose(0, 2, 1)[..., None, :]  # [B, H, 1, Lk]
        dist = q_sq + k_sq - 2.0 * dot_logits(q, k)  # [B, H, Lq, Lk] = ‖q_i - k_j‖²
        return -dist / jnp.sqrt(jnp.float32(q.shape[-1]))

    def features(self, q, k):  # q'·k' = 2 q·k - ‖q‖² - ‖k‖² = -‖q - k‖²
        q_sq, k_sq = jnp.sum(q * q, axis=-1, keepdims=True), jnp.sum(k * k, axis=-1, keepdims=True)
        q_aug = jnp.concatenate([2.0 * q, -q_sq, -jnp.ones_like(q_sq)], axis=-1)  # [B, Lq, H, D+2]
        k_aug = jnp.concatenate([k, jnp.ones_like(k_sq), k_sq], axis=-1)  # [B, Lk, H, D+2]
        return q_aug, k_aug, 1.0 / float(q.shape[-1]) ** 0.5


VARIANT = Euclidean
