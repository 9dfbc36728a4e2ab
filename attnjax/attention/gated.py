"""Gated attention: softmax attention whose output is scaled by a sigmoid gate of the query.

Paper: Qiu et al. 2025, "Gated Attention for Large Language Models: Non-linearity, Sparsity,
and Attention-Sink-Free" (arXiv:2505.06708), the G1 position (after the attention output,
elementwise, head-specific).
Idea: out = softmax(q·kᵀ/√d) v ⊙ σ(q W_g + b_g), with per-head W_g [d, d_v] and b_g [d_v]. The
paper computes the gate from the layer's (normalised) input; a variant here only sees the
projected query, so the gate reads q (a per-head linear map of the same input).
The gate at query i depends only on q_i: causality and padding are those of softmax attention;
a query with no visible key outputs 0.
Complexity: time O(Lq · Lk · d + Lq · d · d_v) and memory O(Lq · Lk) per head (reference path;
O(block² + L · d) on the default tiled path, see _scored.py).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._blockwise import blockwise_attention
from attnjax.attention._scored import takes_tiled_path
from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    combine_masks,
    dense_flops,
    scaled_dot_logits,
    weighted_values,
)


class Gated(AttentionBase):
    """softmax(q kᵀ / √d) v ⊙ sigmoid(q W_g + b_g), W_g and b_g per head.

    Attributes:
      implementation: 'auto' (tiled unless weights are recorded or attention dropout is
        active), 'reference' or 'blockwise' (see _scored.BlockwiseScored).
      block_size: query and key block of the tiled path.
    """

    implementation: str = "auto"
    block_size: int = 512
    small_settings: ClassVar[dict] = {"block_size": 4}

    capabilities = Capabilities(attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        # + the gate q W_g (2 · Lq · d²) and the gating product (Lq · d)
        return dense_flops(q_len, kv_len, head_dim) + 2.0 * q_len * head_dim * (head_dim + 0.5)

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        heads, dim, value_dim = q.shape[2], q.shape[3], v.shape[3]
        kernel = self.param(
            "gate_kernel", nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,)),
            (heads, dim, value_dim),
        )  # W_g [H, D, E]
        gate_bias = self.param("gate_bias", nn.initializers.zeros, (heads, value_dim))  # [H, E]
        if takes_tiled_path(self, deterministic):
            out = blockwise_attention(q, k, v, mask=mask, causal=causal, bias=bias,
                                      soft_cap=self.logit_soft_cap, block_size=self.block_size)
        else:
            weights = self.attention_weights(
                scaled_dot_logits(q, k), combine_masks(mask, causal, q.shape[1], k.shape[1]),
                bias=bias, deterministic=deterministic,
            )  # [B, H, Lq, Lk] float32
            out = weighted_values(weights, v).astype(jnp.float32)  # [B, Lq, H, E]
        gate = jnp.einsum("bqhd,hde->bqhe", q.astype(jnp.float32), kernel) + gate_bias
        return (out * jax.nn.sigmoid(gate)).astype(q.dtype)  # [B, Lq, H, E]


VARIANT = Gated
