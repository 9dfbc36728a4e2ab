"""The attention-variant contract shared by every file in this package.

A variant is a `flax.linen.Module` subclass of `AttentionBase` in `attnjax/attention/<name>.py`,
exported as the module-level name `VARIANT`. It is called as

    module(q, k, v, *, mask=None, causal=False, deterministic=True)

with q: [batch, q_len, heads, head_dim], k/v: [batch, kv_len, kv_heads, head_dim] (kv_heads
divides heads: MQA/GQA; kv_len may differ from q_len for cross attention), mask: optional
boolean key-padding mask [batch, kv_len] (True = a real key that may be attended), and returns
[batch, q_len, heads, head_dim] in q's dtype. `causal=True` means query i sees keys j <= i.

Variant-specific settings are the module's dataclass fields; every field has a default, so
`create(name)` gives a working module and `model.attention_kwargs` in a config overrides them.
Variants with explicit attention weights record them with
`self.sow("intermediates", "attention_weights", weights)` ([batch, heads, q_len, kv_len]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp


class CapabilityError(ValueError):
    """A variant was asked for something it declared it cannot do."""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a variant can do; checked at call time so nothing is silently computed wrong.

    Attributes:
      causal: supports `causal=True` without leaking the future.
      cross_attention: supports kv_len != q_len (keys from another sequence).
      padding_mask: honours a key-padding `mask`.
      needs_max_length: has parameters sized by the sequence length (e.g. Linformer).
      attention_weights: materialises explicit [q_len, kv_len] weights (and sows them).
      state_size: recurrent state per head for causal decoding, as a function of head_dim,
        or None when the state grows with the sequence (a KV cache).
      flops: analytic multiply-adds x2 per head for one sequence, f(q_len, kv_len, head_dim).
    """

    causal: bool = True
    cross_attention: bool = True
    padding_mask: bool = True
    needs_max_length: bool = False
    attention_weights: bool = False
    state_size: Callable[[int], int] | None = None
    flops: Callable[[int, int, int], float] | None = None


class AttentionBase(nn.Module):
    """Base class: declares `capabilities` and checks each call against them."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def check_call(self, q, k, v, mask, causal: bool) -> None:
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
        if causal and not caps.causal:
            raise CapabilityError(f"attention {name!r} has no causal mode")
        if q.shape[1] != k.shape[1] and not caps.cross_attention:
            raise CapabilityError(
                f"attention {name!r} does not support cross attention "
                f"(q_len {q.shape[1]} != kv_len {k.shape[1]})"
            )
        if mask is not None:
            if not caps.padding_mask:
                raise CapabilityError(f"attention {name!r} does not support a padding mask")
            if mask.shape != (k.shape[0], k.shape[1]):
                raise ValueError(
                    f"{name}: mask must be [batch, kv_len] = {(k.shape[0], k.shape[1])}, "
                    f"got {mask.shape}"
                )


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
    """Softmax over the last axis in float32; fully-masked rows give zeros, never NaN."""
    logits = logits.astype(jnp.float32)
    if mask is None:
        return nn.softmax(logits, axis=-1)
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(mask, logits, big_neg)
    weights = nn.softmax(logits, axis=-1)
    return jnp.where(mask, weights, 0.0)


def masked_dot_product_attention(q, k, v, mask):
    """The shared softmax core: logits -> mask -> softmax -> weights · v, with explicit weights.

    q: [B, Lq, H, D]; k, v: [B, Lk, kv_heads, D] (kv_heads divides H); mask: boolean,
    broadcastable to [B, H, Lq, Lk] (True = attend), or None. Returns (out [B, Lq, H, D] in v's
    dtype, weights [B, H, Lq, Lk] float32); a fully-masked row gives zero weights and output.
    """
    heads, head_dim = q.shape[2], q.shape[3]
    k, v = repeat_kv(k, heads), repeat_kv(v, heads)  # [B, Lk, H, D]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits / jnp.sqrt(jnp.float32(head_dim))  # [B, H, Lq, Lk]
    weights = masked_softmax(logits, mask)  # [B, H, Lq, Lk] float32
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)  # [B, Lq, H, D]
    return out, weights
