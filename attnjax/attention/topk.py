"""Top-k attention: each query keeps only its k largest visible logits.

Papers: Zhao et al. 2019, "Explicit Sparse Transformer: Concentrated Attention Through Explicit
Selection" (arXiv:1912.11637); Gupta et al. 2021, "Memory-efficient Transformers via Top-k
Attention" (arXiv:2106.06899).
Idea: logits s = q·kᵀ/√d (after bias and soft-capping); per query, keep the k largest among the
visible keys (padding mask, causality) and softmax over those, zero elsewhere. Ties go to the
lower key index (`jax.lax.top_k`), so the choice is deterministic. The selection is a constant
for differentiation: the gradient is that of the softmax masked to the kept keys. k >= the
number of keys gives plain softmax attention. Padded and future keys are hidden before the
selection, so they can never take a slot.
Complexity: the reference computes the full logits, time O(Lq · Lk · d) and memory O(Lq · Lk)
per head (`flops` reports that), plus the selection O(Lq · Lk · log k); an ideal kernel would
read k values per query, O(Lq · k · d) for weights·v. Causal decoding needs every past key.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp

from attnjax.attention._patterns import pattern_attention
from attnjax.attention.base import AttentionBase, Capabilities, dense_flops, masked_softmax


def top_k_softmax(logits, mask, k: int):
    """Softmax over the k largest visible logits of each row; logits [..., Lk] float32, mask
    boolean broadcastable to it (True = visible) or None."""
    if k >= logits.shape[-1]:
        return masked_softmax(logits, mask)
    visible = logits if mask is None else jnp.where(mask, logits, -jnp.inf)
    _, index = jax.lax.top_k(jax.lax.stop_gradient(visible), k)  # [..., k], ties: lower index
    keep = jnp.put_along_axis(jnp.zeros(logits.shape, bool), index, True, axis=-1,
                              inplace=False)  # [..., Lk]
    if mask is not None:  # a row with fewer than k visible keys picked some hidden ones
        keep = keep & mask
    return masked_softmax(logits, keep)


class TopK(AttentionBase):
    """Softmax attention restricted to each query's k highest-scoring keys.

    Attributes:
      k: number of keys kept per query (>= 1); k >= kv_len is plain softmax attention.
    """

    k: int = 8
    small_settings: ClassVar[dict] = {"k": 4}

    capabilities = Capabilities(attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # the reference computes every q·kᵀ

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.k < 1:
            raise ValueError(f"topk k must be >= 1, got {self.k}")
        normalize = functools.partial(top_k_softmax, k=self.k)
        return pattern_attention(self, q, k, v, None, mask=mask, causal=causal, bias=bias,
                                 deterministic=deterministic, normalize=normalize)


VARIANT = TopK
