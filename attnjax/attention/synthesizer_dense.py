"""Dense Synthesizer: each query row's attention logits come from the token alone, no keys.

Paper: Tay et al. 2020, "Synthesizer: Rethinking Self-Attention in Transformer Models"
(arXiv:2005.00743), the Dense variant.
Idea: a per-head two-layer MLP maps token i to a row of logits over key positions,
  B_i = W2 ReLU(W1 x_i + b1) + b2 ∈ R^max_length,  sliced to the first L_k positions,
  out_i = softmax(B_i) · V.
Here x_i is the token's projected query q_i (the variant receives q, k, v; k is unused), and
every head has its own W1 [d, h], b1 [h], W2 [h, max_length], b2 [max_length] (h = hidden_dim,
head_dim by default). Causal and padding by masking the logits (the softmax gives hidden keys an
exact 0); the logits are explicit, so bias, soft-capping and attention dropout apply. Cross
attention is not supported: the logits address key positions of the query's own sequence.
Complexity per head: time O(L · h · (d + L) + L² · d), memory O(L²); parameters
h · (d + max_length + 1) + max_length per head.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._length_sized import require_max_length
from attnjax.attention.base import AttentionBase, Capabilities, combine_masks, weighted_values


class SynthesizerDense(AttentionBase):
    """softmax(W2 ReLU(W1 q_i + b1) + b2) · V, per head; logits independent of the keys.

    Attributes:
      hidden_dim: h, the MLP's hidden width; 0 means head_dim (the paper's choice).
    """

    hidden_dim: int = 0
    small_settings: ClassVar[dict] = {"max_length": 16}  # logits sliced from 16 to 13 keys

    capabilities = Capabilities(
        cross_attention=False, needs_max_length=True, attention_weights=True, logits=True
    )

    def flops(self, q_len, kv_len, head_dim):
        h = self.hidden_dim or head_dim
        # W1 q, W2 (sliced to Lk columns), weights · v
        return 2.0 * q_len * h * (head_dim + kv_len) + 2.0 * q_len * kv_len * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        n = require_max_length(self)
        self.check_call(q, k, v, mask, causal, bias)
        _, q_len, heads, dim = q.shape
        kv_len = k.shape[1]
        hidden = self.hidden_dim or dim
        init = nn.initializers.lecun_normal(batch_axis=(0,))  # per head: fan_in = input size
        w1 = self.param("w1", init, (heads, dim, hidden))  # [H, D, F]
        b1 = self.param("b1", nn.initializers.zeros, (heads, hidden))  # [H, F]
        w2 = self.param("w2", init, (heads, hidden, n))[:, :, :kv_len]  # [H, F, Lk]
        b2 = self.param("b2", nn.initializers.zeros, (heads, n))[:, :kv_len]  # [H, Lk]
        x = jnp.einsum("bqhd,hdf->bhqf", q.astype(jnp.float32), w1) + b1[:, None]  # [B,H,Lq,F]
        logits = jnp.einsum("bhqf,hfk->bhqk", jax.nn.relu(x), w2) + b2[:, None]  # [B,H,Lq,Lk]
        weights = self.attention_weights(
            logits, combine_masks(mask, causal, q_len, kv_len), bias=bias,
            deterministic=deterministic,
        )  # [B, H, Lq, Lk]
        return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = SynthesizerDense
