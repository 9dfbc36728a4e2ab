"""Scaled dot-product (softmax) attention — the reference every other variant is measured against.

Paper: Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762).
Idea: weights = softmax(q·kᵀ / √d) over keys; output = weights · v.
Complexity: time O(L_q · L_k · d) per head, memory O(L_q · L_k) for the weights (the fused
`xla`/`cudnn` implementations avoid materialising them on GPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    CapabilityError,
    combine_masks,
    dense_flops,
    scaled_dot_logits,
    weighted_values,
)

IMPLEMENTATIONS = ("reference", "xla", "cudnn")


class Softmax(AttentionBase):
    """softmax(q kᵀ / √d) v.

    Attributes:
      implementation: 'reference' (plain jnp, records weights), or 'xla' / 'cudnn' to call
        `jax.nn.dot_product_attention` (fused on GPU; no weights are recorded).
    """

    implementation: str = "reference"

    capabilities = Capabilities(attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"softmax implementation {self.implementation!r} not in {IMPLEMENTATIONS}"
            )
        q_len, kv_len = q.shape[1], k.shape[1]
        full_mask = combine_masks(mask, causal, q_len, kv_len)  # [B|1, 1, Lq, Lk] or None
        if self.implementation != "reference":
            if self.logit_soft_cap > 0 or self.attention_dropout_rate > 0:
                raise CapabilityError(
                    f"softmax implementation {self.implementation!r} has no soft-capping or "
                    "attention dropout; use implementation='reference'"
                )
            out = jax.nn.dot_product_attention(
                q, k, v, bias=bias, mask=full_mask, implementation=self.implementation
            )  # [B, Lq, H, D]
            if full_mask is not None:  # a query with no visible key gives 0, as 'reference'
                has_key = jnp.any(full_mask, axis=-1)[:, 0, :, None, None]  # [B|1, Lq, 1, 1]
                out = jnp.where(has_key, out, 0)
            return out.astype(q.dtype)
        weights = self.attention_weights(
            scaled_dot_logits(q, k), full_mask, bias=bias, deterministic=deterministic
        )  # [B, H, Lq, Lk] float32
        return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = Softmax
