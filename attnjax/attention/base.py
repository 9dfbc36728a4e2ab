"""The attention-variant contract shared by every file in this package.

A variant is a `flax.linen.Module` subclass of `AttentionBase` in `attnjax/attention/<name>.py`,
exported as the module-level name `VARIANT`. Attention-level variants (the default) are called as

    module(q, k, v, *, mask=None, causal=False, bias=None, deterministic=True)

with q: [batch, q_len, heads, head_dim], k/v: [batch, kv_len, kv_heads, head_dim] (kv_heads
divides heads: MQA/GQA; kv_len may differ from q_len for cross attention), mask: optional
boolean key-padding mask [batch, kv_len] (True = a real key that may be attended), bias: optional
additive logits bias broadcastable to [batch, heads, q_len, kv_len] (ALiBi, T5 relative bias;
only for variants whose capabilities say `logits`), and returns [batch, q_len, heads, head_dim]
in q's dtype. `causal=True` means query i sees keys j <= i.

Mixer-level variants (`capabilities.level == "mixer"`: GRU, LSTM, identity, ...) are not
attention at all; they replace the whole token-mixing sublayer and are called as
`module(x, *, mask=None, causal=False, deterministic=True)` on x: [batch, length, d_model].

Variant-specific settings are the module's dataclass fields; every field has a default, so
`create(name)` gives a working module and `model.attention_kwargs` in a config overrides them.
The fields of `AttentionBase` itself (`logit_soft_cap`, `attention_dropout_rate`, `max_length`)
are Block-level options set by the model, not variant settings.
Variants with explicit attention weights compute them through `self.attention_weights(...)`,
which applies bias, soft-capping and attention dropout uniformly and records the weights with
`self.sow("intermediates", "attention_weights", weights)` ([batch, heads, q_len, kv_len]).
Each variant reports its cost: `flops(q_len, kv_len, head_dim)` and `state_size(head_dim)`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

LEVELS = ("attention", "mixer")


class CapabilityError(ValueError):
    """A variant was asked for something it declared it cannot do."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a variant can do; checked at call time so nothing is silently computed wrong.

    Attributes:
      level: "attention" (gets projected q, k, v) or "mixer" (gets the block input x).
      causal: supports `causal=True` without leaking the future.
      bidirectional: supports `causal=False` (every query sees every unpadded key); False for
        mixers that are recurrences by nature (they raise instead of silently running causal).
      cross_attention: supports keys/values from another sequence (kv_len != q_len).
      padding_mask: honours a key-padding `mask`.
      needs_max_length: has parameters sized by the sequence length (Linformer, synthesizers,
        MLP-Mixer); the Block passes `max_length` and longer inputs are refused.
      attention_weights: materialises explicit [q_len, kv_len] weights (and sows them).
      logits: has an explicit score matrix, so it accepts an additive `bias` (ALiBi, T5),
        logit soft-capping and attention dropout.
      normalized: a query's recorded weights sum to 1 over its visible keys (0 if it sees
        none); False for unnormalised scores such as sigmoid or ReLU attention.
    """

    level: str = "attention"
    causal: bool = True
    bidirectional: bool = True
    cross_attention: bool = True
    padding_mask: bool = True
    needs_max_length: bool = False
    attention_weights: bool = False
    logits: bool = False
    normalized: bool = True


class AttentionBase(nn.Module):
    """Base class: Block-level options, cost declarations, and call checks."""

    logit_soft_cap: float = 0.0  # > 0: logits -> cap · tanh(logits / cap) (Gemma 2 style)
    attention_dropout_rate: float = 0.0  # dropout on the attention weights while training
    max_length: int = 0  # the model's maximum length, for needs_max_length variants

    capabilities: ClassVar[Capabilities] = Capabilities()
    # Small settings that exercise the variant's structure (windows, blocks, chunks, features)
    # at test sizes (length ~13, head_dim 8); contract tests and tiny runs use them.
    small_settings: ClassVar[dict] = {}
    # Settings that select the variant's causal token-by-token (recurrent) form, e.g.
    # {"mode": "recurrent"} ({} if it is only ever a scan); None = no such form. In that form
    # with causal=True the variant sows its final state: self.sow("intermediates",
    # "recurrent_state", state), every leaf [batch, ...]; state_size() counts its floats.
    recurrent_settings: ClassVar[dict | None] = None

    # ------------------------------------------------------------------ declared costs
    def flops(self, q_len: int, kv_len: int, head_dim: int) -> float:
        """Analytic FLOPs (2 per multiply-add) of the mixing for one sequence and one head.
        Mixer-level variants read `head_dim` as d_model and count the whole sublayer."""
        raise NotImplementedError(f"{type(self).__name__} must declare flops()")

    def state_size(self, head_dim: int) -> int | None:
        """Numbers a causal decoder keeps per head between tokens (per sequence for mixer-level
        variants, called with head_dim = d_model); None = grows with the sequence (a KV cache
        of 2 · length · head_dim). With `recurrent_settings`, it is the float count of the sown
        recurrent state / batch (/ heads at the attention level)."""
        return None

    # ------------------------------------------------------------------ checks
    def check_call(self, q, k, v, mask, causal: bool, bias=None) -> None:
        caps = self.capabilities
        name = type(self).__name__
        if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
            raise ValueError(
                f"{name}: q, k, v must be [batch, length, heads, head_dim]; got "
                f"{q.shape}, {k.shape}, {v.shape}"
            )
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(f"{name}: k {k.shape} and v {v.shape} disagree on batch/length/heads")
        if q.shape[2] % k.shape[2]:
            raise ValueError(f"{name}: {q.shape[2]} query heads not divisible by {k.shape[2]}")
        self._check_common(mask, causal, k.shape[0], k.shape[1], q.shape[1] != k.shape[1])
        if not caps.logits:
            asked = [what for what, on in (
                ("an additive logits bias (ALiBi / T5 positions)", bias is not None),
                ("logit soft-capping", self.logit_soft_cap > 0),
                ("attention dropout", self.attention_dropout_rate > 0),
            ) if on]
            if asked:
                raise CapabilityError(
                    f"attention {name!r} has no explicit logits, so it cannot apply {asked[0]}"
                )
        if caps.needs_max_length and max(q.shape[1], k.shape[1]) > self.max_length:
            raise ValueError(
                f"{name}: length {max(q.shape[1], k.shape[1])} exceeds max_length "
                f"{self.max_length} (its parameters are sized by max_length)"
            )

    def check_mixer_call(self, x, mask, causal: bool) -> None:
        if x.ndim != 3:
            raise ValueError(f"{type(self).__name__}: x must be [batch, length, d_model]")
        self._check_common(mask, causal, x.shape[0], x.shape[1], cross=False)
        if self.logit_soft_cap > 0 or self.attention_dropout_rate > 0:
            raise CapabilityError(
                f"mixer {type(self).__name__!r} has no explicit logits, so it cannot apply "
                "logit soft-capping or attention dropout"
            )
        if self.capabilities.needs_max_length and x.shape[1] > self.max_length:
            raise ValueError(f"{type(self).__name__}: length {x.shape[1]} exceeds max_length "
                             f"{self.max_length}")

    def _check_common(self, mask, causal: bool, batch: int, kv_len: int, cross: bool) -> None:
        caps, name = self.capabilities, type(self).__name__
        if causal and not caps.causal:
            raise CapabilityError(f"attention {name!r} has no causal mode")
        if not causal and not caps.bidirectional:
            raise CapabilityError(f"attention {name!r} is causal only (call it with causal=True)")
        if cross and not caps.cross_attention:
            raise CapabilityError(f"attention {name!r} does not support cross attention")
        if mask is not None:
            if not caps.padding_mask:
                raise CapabilityError(f"attention {name!r} does not support a padding mask")
            if mask.shape != (batch, kv_len):
                raise ValueError(
                    f"{name}: mask must be [batch, kv_len] = {(batch, kv_len)}, got {mask.shape}"
                )

    def reference_required(self, deterministic: bool) -> bool:
        """Whether a variant with faster paths must take its reference (explicit-weights) path:
        when the caller records the weights (`apply(..., mutable="intermediates")`, as the
        heatmaps do; `init` does not record) or attention dropout is active."""
        records = (self.capabilities.attention_weights
                   and self.is_mutable_collection("intermediates"))
        return records or (self.attention_dropout_rate > 0 and not deterministic)

    # ------------------------------------------------------------------ shared maths
    def attention_weights(self, logits, mask, *, bias=None, deterministic=True,
                          normalize=None):
        """Scores -> weights, the same way for every variant with explicit logits.

        logits: [B, H, Lq, Lk] (any float dtype; computed in float32); mask: boolean,
        broadcastable to it (True = may attend) or None; `normalize(logits, mask)` defaults to
        `masked_softmax`. Applies bias, soft-capping, normalisation, records the weights (when
        the variant declares `attention_weights`: signed or per-block weights are not the
        contract's), then attention dropout (training only). Returns float32 weights.
        """
        logits = logits.astype(jnp.float32)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if self.logit_soft_cap > 0:
            logits = self.logit_soft_cap * jnp.tanh(logits / self.logit_soft_cap)
        weights = (normalize or masked_softmax)(logits, mask)
        if self.capabilities.attention_weights:  # only the contract's [B, H, Lq, Lk] weights
            self.sow("intermediates", "attention_weights", weights)
        rate = self.attention_dropout_rate
        if rate > 0 and not deterministic:
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, weights.shape)
            weights = jnp.where(keep, weights / (1.0 - rate), 0.0)
        return weights


def repeat_kv(x, num_heads: int):
    """[B, L, kv_heads, D] -> [B, L, num_heads, D] for MQA/GQA (each kv head serves a group)."""
    kv_heads = x.shape[2]
    if kv_heads == num_heads:
        return x
    return jnp.repeat(x, num_heads // kv_heads, axis=2)


def combine_masks(mask, causal: bool, q_len: int, kv_len: int):
    """Boolean [B or 1, 1, q_len, kv_len] (True = attend) from a key mask and causality, or None."""
    out = None
    if mask is not None:
        out = mask[:, None, None, :]  # [B, 1, 1, Lk]
    if causal:
        tri = jnp.tril(jnp.ones((q_len, kv_len), dtype=bool))[None, None]  # [1, 1, Lq, Lk]
        out = tri if out is None else out & tri
    return out


def masked_softmax(logits, mask):
    """Softmax over the last axis in float32 (float64 if the logits are); fully-masked rows
    give zeros, never NaN."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))  # float64 stays
    if mask is None:
        return nn.softmax(logits, axis=-1)
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(mask, logits, big_neg)
    weights = nn.softmax(logits, axis=-1)
    return jnp.where(mask, weights, 0.0)


def scaled_dot_logits(q, k):
    """q·kᵀ/√d in float32: q [B, Lq, H, D], k [B, Lk, kv_heads, D] -> [B, H, Lq, Lk]."""
    k = repeat_kv(k, q.shape[2])  # [B, Lk, H, D]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    return logits / jnp.sqrt(jnp.float32(q.shape[3]))


def weighted_values(weights, v):
    """weights [B, H, Lq, Lk] · v [B, Lk, kv_heads, E] -> [B, Lq, H, E] in v's dtype."""
    v = repeat_kv(v, weights.shape[1])  # [B, Lk, H, E]
    return jnp.einsum("bhqk,bkhe->bqhe", weights.astype(v.dtype), v)


def dense_flops(q_len: int, kv_len: int, head_dim: int) -> float:
    """FLOPs of a full score matrix: q·kᵀ and weights·v, 2 · 2 · Lq · Lk · d."""
    return 4.0 * q_len * kv_len * head_dim
