"""Softmax attention under a boolean pattern: the masked full-logits reference shared by the
sparse-pattern variants (strided, longformer, bigbird, topk).

A variant builds a pattern (True = key j may be seen by query i), static [Lq, Lk] or data-dependent
through `normalize`; this module intersects it with the key-padding mask and causality, hides
everything else with the exact masking of `masked_softmax`, and goes through
`AttentionBase.attention_weights` (bias, soft-capping, recording, dropout) like softmax does.
Complexity: whatever the pattern's density, time O(Lq · Lk · d) and memory O(Lq · Lk) per head —
a reference that records its weights, not a sparse kernel.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnjax.attention.base import combine_masks, scaled_dot_logits, weighted_values


def distances(length: int):
    """[L, L] int32 |i - j| between query i and key j on one position axis."""
    pos = jnp.arange(length)
    return jnp.abs(pos[:, None] - pos[None, :])


def pattern_attention(module, q, k, v, pattern, *, mask, causal, bias, deterministic,
                      normalize=None):
    """softmax(q·kᵀ/√d) v where query i sees key j only if pattern[i, j], the key mask and
    causality allow it. pattern: boolean broadcastable to [Lq, Lk], or None (no restriction);
    `normalize(logits, visible)` replaces the softmax (see AttentionBase.attention_weights)."""
    visible = combine_masks(mask, causal, q.shape[1], k.shape[1])  # [B|1, 1, Lq, Lk] or None
    if pattern is not None:
        pattern = pattern[None, None]  # [1, 1, Lq, Lk]
        visible = pattern if visible is None else visible & pattern
    weights = module.attention_weights(
        scaled_dot_logits(q, k), visible, bias=bias, deterministic=deterministic,
        normalize=normalize,
    )  # [B, H, Lq, Lk] float32, exact zeros where not visible
    return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]
