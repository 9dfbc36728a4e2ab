"""ReLU attention: weights = relu(q·kᵀ/√d)^p / n, no softmax.

Papers: Shen et al. 2023, "A Study on ReLU and Softmax in Transformer" (arXiv:2302.06461);
Wortsman et al. 2023, "Replacing softmax with ReLU in Vision Transformers" (arXiv:2309.08586).
Idea: an elementwise ReLU (power 1) or squared ReLU (power 2, as in Primer-style ReLU²) replaces
the softmax; following Wortsman et al., the weights are divided by n, the number of keys the
query may see, so they stay O(1) as the length grows. Choice of n: the per-query count of
visible keys (unpadded, and j <= i under causal masking); Wortsman et al. use L, which is that
count in their bidirectional, unpadded setting. Hidden keys get weight exactly 0; a query with
no visible key outputs 0. The weights are sparse and do not sum to 1.
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (reference path;
O(block² + L · d) on the default tiled path, a plain sum over key blocks, see _scored.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.attention._scored import BlockwiseScored, visible_count
from attnjax.attention.base import Capabilities, scaled_dot_logits


class Relu(BlockwiseScored):
    """relu(q kᵀ/√d)^power / n v, n = keys visible to the query.

    Attributes:
      power: p >= 1; 1 = ReLU, 2 = squared ReLU.
      implementation, block_size: see BlockwiseScored.
    """

    power: int = 1
    capabilities = Capabilities(attention_weights=True, logits=True, normalized=False)

    def score(self, q, k):
        return scaled_dot_logits(q, k)  # [B, H, Lq, Lk]

    def features(self, q, k):
        return q, k, 1.0 / float(q.shape[-1]) ** 0.5

    def _check_power(self):
        if self.power < 1:
            raise ValueError(f"relu power must be an integer >= 1, got {self.power}")

    def blockwise_weights(self, key_mask, causal, q_len, kv_len):
        self._check_power()
        # n_i, the keys query i may see, from a running count (no [Lq, Lk] mask): [B|1, 1, Lq, 1]
        real = jnp.ones((1, kv_len), jnp.int32) if key_mask is None else key_mask.astype(jnp.int32)
        seen = jnp.cumsum(real, axis=1)  # [B|1, Lk] real keys among 0..j
        if causal:
            n = seen[:, jnp.minimum(jnp.arange(q_len), kv_len - 1)]  # [B|1, Lq]
        else:
            n = jnp.broadcast_to(seen[:, -1:], (seen.shape[0], q_len))
        scale = 1.0 / jnp.maximum(n, 1).astype(jnp.float32)
        return {"kind": "relu", "power": self.power, "row_scale": scale[:, None, :, None]}

    def normalizer(self, key_mask, kv_len):
        self._check_power()

        def normalize(logits, mask):
            n = jnp.maximum(visible_count(mask, kv_len), 1.0)  # [B|1, 1, Lq, 1] or scalar
            weights = jnp.maximum(logits, 0.0) ** self.power / n  # [B, H, Lq, Lk]
            return weights if mask is None else jnp.where(mask, weights, 0.0)

        return normalize


VARIANT = Relu
