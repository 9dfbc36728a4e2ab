"""Fused softmax-attention kernels per backend, and the rule `softmax` uses to pick one.

    choose(platform, q, k, v, ...) -> "cudnn" | "pallas" | "xla" | "blockwise"
    cudnn_attention / pallas_attention / xla_attention(q, k, v, mask, causal, bias)

All take q [B, Lq, H, D], k/v [B, Lk, KV, D], a boolean key-padding mask [B, Lk] or None, and
an additive bias broadcastable to [B, H, Lq, Lk] or None; all return [B, Lq, H, D] in q's dtype
with the reference's convention that a query with no visible key outputs 0. None of them
applies soft-capping or attention dropout (`choose` never picks them then).

- cuDNN (NVIDIA GPU, fp16/bf16): `jax.nn.dot_product_attention(implementation="cudnn")` given
  `is_causal` and `key_value_seq_lengths`. A padding mask that is a prefix of each row (the
  usual right padding) becomes lengths; any other mask (left padding, holes) is handed to cuDNN
  as a dense mask, which it turns into an additive [B, 1, Lq, Lk] bias: the slow path. Which
  of the two runs is decided on the device (`lax.cond` on "is every row a prefix"; under
  `vmap` with a batched mask both run).
- Pallas on TPU: `jax.experimental.pallas.ops.tpu.flash_attention`, padding as segment ids.
  UNTESTED: no TPU was available when it was written; it is kept to `pallas_attention` so it
  is easy to check or replace. `choose` only picks it for self-attention with lengths that
  are multiples of 128.
- XLA: `jax.nn.dot_product_attention(implementation="xla")` with the dense mask; materialises
  the scores like the reference (used where no fused kernel applies on GPU/TPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from attnjax.attention.base import combine_masks, repeat_kv

HALF_DTYPES = (jnp.float16, jnp.bfloat16)
TPU_BLOCK = 128  # the Pallas flash kernel's block: sequence lengths must be multiples of it


def _cuda_compute_capability() -> float | None:
    """The first GPU's CUDA compute capability (9.0 = Hopper), None if not an NVIDIA GPU."""
    device = jax.devices()[0]
    capability = getattr(device, "compute_capability", None)
    if capability is None and "nvidia" not in device.device_kind.lower():
        return None
    try:
        return float(capability)
    except (TypeError, ValueError):
        return 8.0  # an NVIDIA GPU that does not say: assume the pre-Hopper limits


def cudnn_supports(q, k, v, bias, causal: bool) -> str | None:
    """None when cuDNN's flash attention takes these inputs, else the reason it does not."""
    if not (q.dtype == k.dtype == v.dtype and q.dtype in HALF_DTYPES):
        return f"cuDNN needs float16/bfloat16 q, k, v (got {q.dtype})"
    capability = _cuda_compute_capability()
    if capability is None:
        return "not an NVIDIA GPU"
    max_dim = 256 if capability >= 9.0 else 128
    dim = q.shape[-1]
    if dim % 8 or dim > max_dim or v.shape[-1] != dim:
        return f"cuDNN needs head_dim a multiple of 8, <= {max_dim}, equal for q and v (got {dim})"
    if causal and q.shape[1] != k.shape[1]:
        return "causal cross attention (cuDNN's causal mask alignment differs)"
    if bias is not None and (q.shape[1] % 2 or k.shape[1] % 2):
        return "cuDNN's bias gradient needs even lengths"
    return None


def pallas_supports(q, k, v, bias, causal: bool) -> str | None:
    """None when the (untested) TPU Pallas flash kernel is used for these inputs."""
    if q.shape[1] != k.shape[1]:
        return "cross attention"
    if q.shape[1] % TPU_BLOCK:
        return f"length not a multiple of {TPU_BLOCK}"
    if v.shape[-1] != q.shape[-1]:
        return "value head_dim differs from query head_dim"
    return None


def choose(platform: str, q, k, v, *, bias=None, causal=False, soft_cap=0.0) -> str:
    """The softmax implementation `auto` runs on `platform` ("cpu" | "gpu" | "tpu" | ...)."""
    if soft_cap > 0:
        return "blockwise"  # no fused kernel here applies soft-capping
    if platform == "gpu":
        return "cudnn" if cudnn_supports(q, k, v, bias, causal) is None else "xla"
    if platform == "tpu":
        return "pallas" if pallas_supports(q, k, v, bias, causal) is None else "xla"
    return "blockwise"


def _zero_blind_rows(out, full_mask):
    """Queries that see no key output 0 (the reference's convention); full_mask as
    `combine_masks` gives it ([B|1, 1, Lq, Lk]) or None."""
    if full_mask is None:
        return out
    has_key = jnp.any(full_mask, axis=-1)[:, 0, :, None, None]  # [B|1, Lq, 1, 1]
    return jnp.where(has_key, out, 0)


def xla_attention(q, k, v, mask, causal: bool, bias):
    full = combine_masks(mask, causal, q.shape[1], k.shape[1])  # [B|1, 1, Lq, Lk] or None
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=full, implementation="xla")
    return _zero_blind_rows(out, full).astype(q.dtype)


def _cudnn_bias(bias, q, k):
    if bias is None:
        return None
    bias = jnp.asarray(bias, q.dtype)
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    return jnp.broadcast_to(bias, (*bias.shape[:2], q.shape[1], k.shape[1]))  # [bB, bH, Lq, Lk]


def prefix_lengths(mask):
    """(lengths int32 [B], whether every row of the [B, Lk] mask is True then False only)."""
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.int32)  # [B]
    return lengths, jnp.all(mask == (jnp.arange(mask.shape[1])[None] < lengths[:, None]))


def cudnn_attention(q, k, v, mask, causal: bool, bias):
    """cuDNN flash attention; lengths for prefix masks, the dense mask otherwise."""
    bias = _cudnn_bias(bias, q, k)

    def dense(q, k, v, bias):
        full = None if mask is None else mask[:, None, None, :]
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=full, is_causal=causal,
                                            implementation="cudnn")

    if mask is None:
        return dense(q, k, v, bias).astype(q.dtype)
    lengths, is_prefix = prefix_lengths(mask)

    def with_lengths(q, k, v, bias):
        # a sequence with no real key would give a row of NaN: give it one key, zeroed below
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, is_causal=causal, key_value_seq_lengths=jnp.maximum(lengths, 1),
            implementation="cudnn")

    out = lax.cond(is_prefix, with_lengths, dense, q, k, v, bias)
    return _zero_blind_rows(out, combine_masks(mask, causal, q.shape[1], k.shape[1])).astype(
        q.dtype)


def pallas_attention(q, k, v, mask, causal: bool, bias):
    """TPU Pallas flash attention (UNTESTED on a TPU; see the module doc)."""
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    batch, length, heads, dim = q.shape
    q4, k4, v4 = (jnp.swapaxes(repeat_kv(x, heads), 1, 2) for x in (q, k, v))  # [B, H, L, D]
    segments = None
    if mask is not None:  # queries are segment 1; padded keys segment 0 are never attended
        segments = tpu_flash.SegmentIds(q=jnp.ones((batch, length), jnp.int32),
                                        kv=mask.astype(jnp.int32))
    ab = None
    if bias is not None:
        ab = jnp.asarray(bias, q.dtype)
        ab = jnp.broadcast_to(ab.reshape((1,) * (4 - ab.ndim) + ab.shape),
                              (batch, heads, length, length))
    out = tpu_flash.flash_attention(q4, k4, v4, ab, segments, causal=causal,
                                    sm_scale=float(dim) ** -0.5)  # [B, H, L, D]
    out = jnp.swapaxes(out, 1, 2)
    return _zero_blind_rows(out, None if mask is None else combine_masks(
        mask, causal, length, length)).astype(q.dtype)


KERNELS = {"cudnn": cudnn_attention, "pallas": pallas_attention, "xla": xla_attention}
