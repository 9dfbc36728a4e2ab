"""Strided / fixed sparse attention of the Sparse Transformer.

Paper: Child et al. 2019, "Generating Long Sequences with Sparse Transformers" (arXiv:1904.10509).
Idea: softmax attention where query i sees key j only under a factorised pattern (stride s), the
union of the paper's two heads in one (its "merged" form):
  strided: |i - j| < s (the last s positions) or |i - j| ≡ 0 mod s (every s-th one before);
  fixed:   j in i's block of s positions (⌊j/s⌋ = ⌊i/s⌋), or j a summary position
           (j mod s >= s - c, c = num_summary), the last c positions of every block.
Causal keeps the j <= i half (the paper's form); non-causal is the symmetric pattern above.
Padded keys are hidden as well; a query with no visible key outputs 0.
Complexity: ideal time O(L · (s + L/s) · d) per head, O(L · √L · d) at s = √L. This is the
masked full-logits reference (shared `_patterns` helper): time O(L² · d) and memory O(L²) per
head, which `flops` reports; in exchange it records its weights. Causal decoding keeps every
s-th key (and the last s), so the cache grows with L (state_size None).
Cross attention is not supported: the pattern needs query and key positions on one axis.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from attnjax.attention._patterns import distances, pattern_attention
from attnjax.attention.base import AttentionBase, Capabilities, dense_flops

MODES = ("strided", "fixed")


def strided_pattern(length: int, stride: int, mode: str, num_summary: int):
    """Boolean [L, L], the symmetric (non-causal) pattern; causality is intersected later."""
    if mode == "strided":
        dist = distances(length)  # [L, L]
        return (dist < stride) | (dist % stride == 0)
    pos = jnp.arange(length)
    same_block = (pos[:, None] // stride) == (pos[None, :] // stride)  # [L, L]
    summary = pos % stride >= stride - num_summary  # [L] key j summarises its block
    return same_block | summary[None, :]


class Strided(AttentionBase):
    """Softmax attention under the Sparse Transformer's strided or fixed pattern.

    Attributes:
      stride: s >= 1 (the paper's l); s >= L gives plain softmax in 'strided' mode.
      mode: 'strided' (local band + every s-th key) or 'fixed' (own block + summary keys).
      num_summary: c, 0 <= c <= s, summary positions per block in 'fixed' mode.
    """

    stride: int = 8
    mode: str = "strided"
    num_summary: int = 1
    small_settings: ClassVar[dict] = {"stride": 3}  # band and strides show at L = 13

    capabilities = Capabilities(cross_attention=False, attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # the reference computes every q·kᵀ

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.stride < 1 or self.mode not in MODES:
            raise ValueError(f"strided needs stride >= 1 and mode in {MODES}; got "
                             f"{self.stride}, {self.mode!r}")
        if not 0 <= self.num_summary <= self.stride:
            raise ValueError(f"strided num_summary must be in [0, stride]; got {self.num_summary}")
        pattern = strided_pattern(q.shape[1], self.stride, self.mode, self.num_summary)
        return pattern_attention(self, q, k, v, pattern, mask=mask, causal=causal, bias=bias,
                                 deterministic=deterministic)


VARIANT = Strided
