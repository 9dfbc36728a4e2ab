"""Sigmoid attention: each weight is an independent sigmoid, with no normalisation over keys.

Paper: Ramapuram et al. 2024, "Theory, Analysis, and Best Practices for Sigmoid Self-Attention"
(arXiv:2409.04431).
Idea: weights = σ(q·kᵀ/√d + b) elementwise, with the paper's bias b = -log(n): at init the
weights of n keys then sum to about 1 (σ(-log n) ≈ 1/n), without a row-wise normalisation.
Choice of n: the number of real (unpadded) keys of the sequence — the sequence length, as the
paper uses, also in causal mode (it does not use the per-query count i + 1); with a padding
mask, the padded keys are not counted, so padding a sequence does not change its outputs.
Hidden (padded / future) keys get weight exactly 0. The recorded weights do not sum to 1.
Only the attention operation is reproduced: the paper's FlashSigmoid kernel and its
stabilisers (hybrid-norm, LayerScale) belong elsewhere in the model.
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (reference path;
O(block² + L · d) on the default tiled path, a plain sum over key blocks, see _scored.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnjax.attention._scored import BlockwiseScored, visible_count
from attnjax.attention.base import Capabilities, scaled_dot_logits


class Sigmoid(BlockwiseScored):
    """σ(q kᵀ/√d - log n) v, unnormalised, n = real keys per sequence; settings:
    implementation, block_size (BlockwiseScored)."""

    capabilities = Capabilities(attention_weights=True, logits=True, normalized=False)

    def score(self, q, k):
        return scaled_dot_logits(q, k)  # [B, H, Lq, Lk]

    def features(self, q, k):
        return q, k, 1.0 / float(q.shape[-1]) ** 0.5

    def _offset(self, key_mask, kv_len):
        # n: real keys of each sequence, [B, 1, 1, 1] (or the scalar kv_len without padding)
        n = visible_count(None if key_mask is None else key_mask[:, None, None, :], kv_len)
        return -jnp.log(jnp.maximum(n, 1.0))  # b = -log(n)

    def blockwise_weights(self, key_mask, causal, q_len, kv_len):
        return {"kind": "sigmoid", "row_offset": self._offset(key_mask, kv_len)}

    def normalizer(self, key_mask, kv_len):
        offset = self._offset(key_mask, kv_len)

        def normalize(logits, mask):
            weights = jax.nn.sigmoid(logits + offset)  # [B, H, Lq, Lk]
            return weights if mask is None else jnp.where(mask, weights, 0.0)

        return normalize


VARIANT = Sigmoid
