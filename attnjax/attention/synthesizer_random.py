"""Random Synthesizer: attention logits are a per-head table over positions, ignoring content.

Paper: Tay et al. 2020, "Synthesizer: Rethinking Self-Attention in Transformer Models"
(arXiv:2005.00743), the Random variant (R) and its fixed form (Fixed Random).
Idea: logits R [heads, max_length, max_length] independent of the input, sliced to [L_q, L_k];
  out = softmax(R) · V.
trainable=True: R is a parameter (init N(0, 1)). trainable=False: R is drawn from `seed`
(N(0, 1), jax.random) at every call — a constant, not a parameter, so neither the optimiser nor
weight decay touch it. Causal and padding by masking the logits (hidden keys get an exact 0);
the logits are explicit, so bias, soft-capping and attention dropout apply. Cross attention is
not supported: R addresses positions of one sequence.
Complexity per head: time O(L² · d) (weights · v only), memory O(L²); parameters
max_length² per head.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._length_sized import require_max_length
from attnjax.attention.base import AttentionBase, Capabilities, combine_masks, weighted_values


class SynthesizerRandom(AttentionBase):
    """softmax(R[:Lq, :Lk]) · V with an input-independent logits table R per head.

    Attributes:
      trainable: learn R (True), or keep the random R drawn from `seed` fixed (False).
      seed: the fixed R's random seed (used only when trainable=False).
    """

    trainable: bool = True
    seed: int = 0
    small_settings: ClassVar[dict] = {"max_length": 16}  # table sliced from 16 to 13

    capabilities = Capabilities(
        cross_attention=False, needs_max_length=True, attention_weights=True, logits=True
    )

    def flops(self, q_len, kv_len, head_dim):
        return 2.0 * q_len * kv_len * head_dim  # weights · v; the logits are a lookup

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        n = require_max_length(self)
        self.check_call(q, k, v, mask, causal, bias)
        batch, q_len, heads, _ = q.shape
        kv_len = k.shape[1]
        shape = (heads, n, n)
        if self.trainable:
            table = self.param("logits", nn.initializers.normal(1.0), shape)  # [H, n, n]
        else:
            table = jax.random.normal(jax.random.key(self.seed), shape, jnp.float32)
        logits = jnp.broadcast_to(table[None, :, :q_len, :kv_len], (batch, heads, q_len, kv_len))
        weights = self.attention_weights(
            logits, combine_masks(mask, causal, q_len, kv_len), bias=bias,
            deterministic=deterministic,
        )  # [B, H, Lq, Lk]
        return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = SynthesizerRandom
