"""Longformer attention: a sliding window plus a few global tokens.

Paper: Beltagy et al. 2020, "Longformer: The Long-Document Transformer" (arXiv:2004.05150).
Idea: softmax attention where query i sees key j if |i - j| < w (the sliding window, w =
window_size, as in the `local` variant: 2w - 1 keys, i.e. the paper's window of 2w - 2 plus
itself), or if i or j is one of the first g = num_global positions (global tokens attend
everywhere and are attended by everyone; symmetric, as in the paper). Causal keeps the j <= i
half: the first g tokens are then seen by every later query, and a global query sees its whole
past — nothing from the future. Padded keys are hidden; a query with no visible key outputs 0.
The paper's separate projections for global attention are not used (same q, k, v); dilation is
not implemented.
Complexity: ideal time O(L · (w + g) · d) and memory O(L · (w + g)) per head. This is the masked
full-logits reference (shared `_patterns` helper): time O(L² · d), memory O(L²) per head, which
`flops` reports; in exchange it records its weights. Causal decoding needs the last w keys and
the g global ones: state 2 · (w + g) · d per head.
Cross attention is not supported: the window needs query and key positions on one axis.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from attnjax.attention._patterns import distances, pattern_attention
from attnjax.attention.base import AttentionBase, Capabilities, dense_flops


def longformer_pattern(length: int, window_size: int, num_global: int):
    """Boolean [L, L]: window band, global rows and global columns (symmetric)."""
    is_global = jnp.arange(length) < num_global  # [L]
    band = distances(length) < window_size  # [L, L]
    return band | is_global[:, None] | is_global[None, :]


class Longformer(AttentionBase):
    """Softmax attention over a sliding window and the first num_global (global) tokens.

    Attributes:
      window_size: w >= 1, keys with |i - j| < w; w >= L gives plain softmax attention.
      num_global: g >= 0 global tokens, the first g positions (g = 0: the `local` variant).
    """

    window_size: int = 64
    num_global: int = 1
    small_settings: ClassVar[dict] = {"window_size": 3, "num_global": 2}

    capabilities = Capabilities(cross_attention=False, attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # the reference computes every q·kᵀ

    def state_size(self, head_dim):
        return 2 * (self.window_size + self.num_global) * head_dim  # window + global k, v

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.window_size < 1 or self.num_global < 0:
            raise ValueError(f"longformer needs window_size >= 1 and num_global >= 0; got "
                             f"{self.window_size}, {self.num_global}")
        pattern = longformer_pattern(q.shape[1], self.window_size, self.num_global)
        return pattern_attention(self, q, k, v, pattern, mask=mask, causal=causal, bias=bias,
                                 deterministic=deterministic)


VARIANT = Longformer
