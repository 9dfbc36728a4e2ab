"""Shared structure of the explicit-score variants (dot, general, additive, cosine, euclidean,
sigmoid, relu, sparsemax): they differ only in the score s(q_i, k_j) and the normaliser that
turns a row of scores into weights.

    logits  = score(q, k)                         # [B, H, Lq, Lk], float32
    weights = normalise(logits + bias, mask)      # via AttentionBase.attention_weights
    out     = weights · v                         # [B, Lq, H, E]

A subclass implements `score` (it may create per-head parameters with `self.param`; it is called
from the compact `__call__`) and, when it does not use softmax, `normalizer`. The mask given to
the normaliser is the combined key-padding and causal mask; every normaliser here gives hidden
keys an exact 0 weight, so padded keys and future positions never change an output.

Variants whose score is a dot product of transformed queries and keys, s = scale · q'·k'ᵀ,
subclass `BlockwiseScored` instead and implement `features` (dot, general, cosine, euclidean,
sigmoid, relu). They gain `implementation` ('auto' | 'reference' | 'blockwise') and
`block_size`: 'auto' runs the memory-efficient tiled path of `_blockwise.py` (no [Lq, Lk]
array, forward or backward) unless the weights are recorded (heatmaps) or attention dropout is
active, where it runs the reference. The softmax normaliser is computed online over key
blocks; sigmoid and ReLU weights need no normaliser over keys, so their output is a plain sum
over blocks (`blockwise_weights` says which, with its per-row offset or scale).
`gated` and `differential` (softmax maps combined after the weights) use the same kernel and
`takes_tiled_path`. Still materialising [Lq, Lk] scores: additive (its tanh MLP score is not a
dot product) and sparsemax / entmax (the threshold needs each whole row sorted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._blockwise import blockwise_attention
from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    CapabilityError,
    combine_masks,
    dense_flops,
    repeat_kv,
    weighted_values,
)

Normalizer = Callable[..., jax.Array]  # normalize(logits, mask) -> weights


def dot_logits(q, k):
    """Unscaled q·kᵀ: q [B, Lq, H, D], k [B, Lk, H, D] (float32) -> [B, H, Lq, Lk]."""
    return jnp.einsum("bqhd,bkhd->bhqk", q, k)


def visible_count(mask, kv_len: int):
    """Number of keys each query may see, float32 [..., Lq, 1]; kv_len when mask is None."""
    if mask is None:
        return jnp.float32(kv_len)
    return jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.float32)


class ScoredAttention(AttentionBase):
    """Base for variants with an explicit score matrix; subclasses define `score`."""

    capabilities = Capabilities(attention_weights=True, logits=True)

    def score(self, q, k):
        """q [B, Lq, H, D], k [B, Lk, H, D] (float32, k already repeated for GQA) ->
        logits [B, H, Lq, Lk] float32."""
        raise NotImplementedError

    def normalizer(self, key_mask, kv_len: int) -> Normalizer | None:
        """`normalize(logits, mask)` for `attention_weights`; None = masked softmax.

        key_mask is the [B, Lk] padding mask (or None), for normalisers that need a per-sequence
        quantity such as the number of real keys; the combined mask is passed at call time."""
        return None

    def score_flops(self, q_len: int, kv_len: int, head_dim: int) -> float:
        """FLOPs of the score beyond the plain q·kᵀ (projections, norms); 0 by default."""
        return 0.0

    def flops(self, q_len, kv_len, head_dim):
        # q·kᵀ and weights·v (2 · 2 · Lq · Lk · d) plus the variant's extra score work;
        # elementwise normaliser work on the [Lq, Lk] matrix is not counted, as for softmax.
        return dense_flops(q_len, kv_len, head_dim) + self.score_flops(q_len, kv_len, head_dim)

    def use_blockwise(self, deterministic: bool) -> bool:
        """Whether this call takes the tiled path (never, unless a subclass has one)."""
        return False

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        heads, q_len, kv_len = q.shape[2], q.shape[1], k.shape[1]
        q32 = q.astype(jnp.float32)  # [B, Lq, H, D]
        k32 = repeat_kv(k.astype(jnp.float32), heads)  # [B, Lk, H, D]
        if self.use_blockwise(deterministic):
            q_features, k_features, scale = self.features(q32, k32)  # [B, L, H, D']
            out = blockwise_attention(
                q_features, k_features, v.astype(jnp.float32), mask=mask, causal=causal,
                bias=bias, scale=scale, soft_cap=self.logit_soft_cap, block_size=self.block_size,
                **self.blockwise_weights(mask, causal, q_len, kv_len))
            return out.astype(q.dtype)  # [B, Lq, H, E]
        full_mask = combine_masks(mask, causal, q_len, kv_len)  # [B|1, 1, Lq, Lk] or None
        logits = self.score(q32, k32)  # [B, H, Lq, Lk]
        weights = self.attention_weights(
            logits, full_mask, bias=bias, deterministic=deterministic,
            normalize=self.normalizer(mask, kv_len),
        )  # [B, H, Lq, Lk] float32
        return weighted_values(weights, v.astype(jnp.float32)).astype(q.dtype)  # [B, Lq, H, E]


IMPLEMENTATIONS = ("auto", "reference", "blockwise")


class BlockwiseScored(ScoredAttention):
    """A scored variant whose score is scale · q'·k'ᵀ: it also runs tiled (`_blockwise.py`).

    Attributes:
      implementation: 'auto' (tiled unless weights are recorded or attention dropout is
        active), 'reference' (the full score matrix, always) or 'blockwise' (always tiled).
      block_size: query and key block of the tiled path (memory ~ block_size² per head).
    """

    implementation: str = "auto"
    block_size: int = 512
    small_settings: ClassVar[dict] = {"block_size": 4}  # several blocks, a ragged last one

    def features(self, q, k):
        """q [B, Lq, H, D], k [B, Lk, H, D] (float32, k repeated for GQA) -> (q', k', scale)
        with score(q, k) = scale · q'·k'ᵀ; may create the same parameters as `score`."""
        raise NotImplementedError

    def score(self, q, k):
        q_features, k_features, scale = self.features(q, k)
        return dot_logits(q_features, k_features) * scale  # [B, H, Lq, Lk]

    def blockwise_weights(self, key_mask, causal: bool, q_len: int, kv_len: int) -> dict:
        """The tiled path's weights: keyword arguments of `blockwise_attention` (kind, power,
        row_offset, row_scale) matching `normalizer`; softmax by default."""
        return {"kind": "softmax"}

    def use_blockwise(self, deterministic):
        return takes_tiled_path(self, deterministic)


def takes_tiled_path(module, deterministic: bool) -> bool:
    """Whether a module with `implementation` in IMPLEMENTATIONS runs its tiled path now."""
    if module.implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{type(module).__name__} implementation {module.implementation!r} "
                         f"not in {IMPLEMENTATIONS}")
    if module.implementation == "blockwise":
        if module.attention_dropout_rate > 0 and not deterministic:
            raise CapabilityError("the blockwise path has no attention dropout; use "
                                  "implementation='reference' or 'auto'")
        return True
    return module.implementation == "auto" and not module.reference_required(deterministic)
