"""Sliding-window (local) attention: softmax attention restricted to a band around each query.

Papers: Beltagy et al. 2020, "Longformer: The Long-Document Transformer" (arXiv:2004.05150),
its sliding-window attention; the causal band is the local head of the strided pattern in
Child et al. 2019, "Generating Long Sequences with Sparse Transformers" (arXiv:1904.10509).
Idea: softmax(q·kᵀ / √d) · v where query i sees only keys j within the window:
  causal:     i - window_size < j <= i      (itself and the window_size - 1 keys before it);
  non-causal: |i - j| < window_size         (2 · window_size - 1 keys, centred on i).
Padded keys are excluded as well; a query with no visible key outputs 0.
Complexity: ideal time O(L · w · d) and memory O(L · w) per head (w = window_size). This is the
reference implementation: it masks the full L x L logits, so it costs what softmax costs,
time O(L² · d) and memory O(L²), and `flops` reports that cost. In exchange it records its
weights. Causal decoding needs only the last window_size keys and values (2 · w · d per head),
declared by `state_size`.
Cross attention is not supported: the band needs query and key positions on one axis.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    combine_masks,
    dense_flops,
    scaled_dot_logits,
    weighted_values,
)


def band_mask(length: int, window_size: int, causal: bool):
    """Boolean [1, 1, L, L]: True where key j lies in query i's window (see module docstring)."""
    pos = jnp.arange(length)
    offset = pos[:, None] - pos[None, :]  # [L, L] = i - j
    band = (offset >= 0) & (offset < window_size) if causal else jnp.abs(offset) < window_size
    return band[None, None]  # [1, 1, L, L]


class Local(AttentionBase):
    """Softmax attention over a sliding window of keys.

    Attributes:
      window_size: w >= 1; causal: keys i-w < j <= i; non-causal: |i-j| < w. w >= L gives
        plain softmax attention.
    """

    window_size: int = 16
    small_settings: ClassVar[dict] = {"window_size": 3}  # the band shows at L = 13

    capabilities = Capabilities(cross_attention=False, attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # the reference computes every q·kᵀ

    def state_size(self, head_dim):
        return 2 * self.window_size * head_dim  # the last w keys and values

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.window_size < 1:
            raise ValueError(f"local window_size must be >= 1, got {self.window_size}")
        length = q.shape[1]
        full_mask = band_mask(length, self.window_size, causal)  # [1, 1, L, L]
        key_mask = combine_masks(mask, False, length, length)  # [B, 1, 1, L] or None
        if key_mask is not None:
            full_mask = full_mask & key_mask  # [B, 1, L, L]
        weights = self.attention_weights(
            scaled_dot_logits(q, k), full_mask, bias=bias, deterministic=deterministic
        )  # [B, H, L, L] float32
        return weighted_values(weights, v).astype(q.dtype)  # [B, L, H, D]


VARIANT = Local
