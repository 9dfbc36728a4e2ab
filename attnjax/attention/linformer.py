"""Linformer: attention over keys and values projected along the length axis to a fixed size.

Paper: Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity" (arXiv:2006.04768).
Idea: learned E, F [k, n] (k = proj_dim, n = max_length) compress the n keys and values to k:
  out = softmax(Q (E K)ᵀ / √d) (F V),   Q [L_q, d], E K and F V [k, d].
E and F are separate (not the paper's key-value sharing) and shared across heads (the paper's
"headwise sharing"); each layer has its own. A sequence shorter than max_length uses the first
L_k columns of E and F, which is the same as zero-padding it to max_length. Padded keys and
values are zeroed before projecting, so they add nothing to E K and F V; padding still changes
the result through those zeros (the k projected keys are mixtures with fewer terms), unlike
softmax attention, whose normaliser simply skips padded keys.
Non-causal only: every projected key mixes all positions. Cross attention works as is
(L_k <= max_length keys are projected; any L_q <= max_length).
E, F init: LeCun normal over the length axis (std 1/√max_length), so E K keeps k's scale.
Complexity per head: time O(k · (L_q + L_k) · d), memory O(L_q · k) for the weights over the k
projected keys; parameters 2 · k · max_length per layer.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention._length_sized import require_max_length
from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    masked_softmax,
    scaled_dot_logits,
    weighted_values,
)


class Linformer(AttentionBase):
    """softmax(Q (E K)ᵀ / √d) (F V) with learned length projections E, F [proj_dim, max_length].

    Attributes:
      proj_dim: k, the number of projected keys/values.
    """

    proj_dim: int = 64
    # 4 projected keys < 13 tokens; the contract tests need a max_length >= 13
    small_settings: ClassVar[dict] = {"proj_dim": 4, "max_length": 16}

    capabilities = Capabilities(causal=False, cross_attention=True, needs_max_length=True)

    def flops(self, q_len, kv_len, head_dim):
        # E K and F V: 2 · 2 · k · Lk · d; Q (EK)ᵀ and weights · (FV): 2 · 2 · Lq · k · d
        return 4.0 * self.proj_dim * (q_len + kv_len) * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        n = require_max_length(self)
        self.check_call(q, k, v, mask, causal, bias)
        kv_len = k.shape[1]
        init = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)  # fan_in = max_length
        e = self.param("key_projection", init, (self.proj_dim, n))[:, :kv_len]  # [P, Lk]
        f = self.param("value_projection", init, (self.proj_dim, n))[:, :kv_len]  # [P, Lk]
        k32, v32 = k.astype(jnp.float32), v.astype(jnp.float32)  # [B, Lk, KV, D]
        if mask is not None:
            real = mask[:, :, None, None]  # [B, Lk, 1, 1]
            k32, v32 = jnp.where(real, k32, 0.0), jnp.where(real, v32, 0.0)
        k_proj = jnp.einsum("pk,bkhd->bphd", e, k32)  # [B, P, KV, D]
        v_proj = jnp.einsum("pk,bkhd->bphd", f, v32)  # [B, P, KV, D]
        logits = scaled_dot_logits(q.astype(jnp.float32), k_proj)  # [B, H, Lq, P]
        weights = masked_softmax(logits, None)  # [B, H, Lq, P]
        return weighted_values(weights, v_proj).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = Linformer
