"""Scaled dot-product (softmax) attention — the reference every other variant is measured against.

Paper: Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762).
Idea: weights = softmax(q·kᵀ / √d) over keys; output = weights · v.
Complexity: time O(L_q · L_k · d) per head; memory O(L_q · L_k) for the weights on the
`reference` path, O(block² + L · d) on `blockwise`, and no score matrix in the fused kernels.

Implementations (`implementation`):
  auto       the default: `reference` whenever the weights are recorded (heatmaps) or attention
             dropout is active; otherwise on an NVIDIA GPU cuDNN flash attention (fp16/bf16,
             head_dim a multiple of 8; else XLA), on TPU the Pallas flash kernel (self
             attention, lengths a multiple of 128; else XLA; untested on a TPU), on CPU
             `blockwise`; with logit soft-capping `blockwise` on every backend.
  reference  plain jnp over the full [Lq, Lk] matrix; records the weights; the truth.
  blockwise  memory-efficient plain JAX (online softmax over key blocks of `block_size`,
             recomputing backward); no weights recorded, no attention dropout.
  xla / cudnn / pallas   `jax.nn.dot_product_attention` (XLA or cuDNN) or the TPU Pallas
             kernel, forced; no weights, soft-capping or attention dropout.
See attnjax/attention/_fused.py and _blockwise.py.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import jax

from attnjax.attention import _fused
from attnjax.attention._blockwise import blockwise_attention
from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    CapabilityError,
    combine_masks,
    dense_flops,
    scaled_dot_logits,
    weighted_values,
)

IMPLEMENTATIONS = ("auto", "reference", "blockwise", "xla", "cudnn", "pallas")


class Softmax(AttentionBase):
    """softmax(q kᵀ / √d) v.

    Attributes:
      implementation: one of IMPLEMENTATIONS (see the module doc); 'auto' picks per backend.
      block_size: query and key block of the `blockwise` path (memory ~ block_size² per head).
    """

    implementation: str = "auto"
    block_size: int = 512

    capabilities = Capabilities(attention_weights=True, logits=True)
    small_settings: ClassVar[dict] = {"block_size": 4}  # several blocks, a ragged last one

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)

    def resolve_implementation(self, q, k, v, *, causal=False, bias=None,
                               deterministic=True) -> str:
        """The implementation a call with these inputs runs (resolves 'auto')."""
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"softmax implementation {self.implementation!r} not in {IMPLEMENTATIONS}"
            )
        if self.implementation != "auto":
            return self.implementation
        if self.reference_required(deterministic):
            return "reference"
        return _fused.choose(jax.default_backend(), q, k, v, bias=bias, causal=causal,
                             soft_cap=self.logit_soft_cap)

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        path = self.resolve_implementation(q, k, v, causal=causal, bias=bias,
                                           deterministic=deterministic)
        dropout = self.attention_dropout_rate > 0 and not deterministic
        if path != "reference" and (dropout or (self.logit_soft_cap > 0 and path != "blockwise")):
            raise CapabilityError(
                f"softmax implementation {path!r} has no "
                f"{'attention dropout' if dropout else 'soft-capping'}; use "
                f"implementation='reference' or 'auto'"
            )
        if path == "blockwise":
            out = blockwise_attention(q, k, v, mask=mask, causal=causal, bias=bias,
                                      soft_cap=self.logit_soft_cap, block_size=self.block_size)
            return out.astype(q.dtype)  # [B, Lq, H, D]
        if path in _fused.KERNELS:
            if self.implementation == "auto" and path == "cudnn":
                try:  # cuDNN refuses some shapes at trace time: fall back to XLA
                    return _fused.cudnn_attention(q, k, v, mask, causal, bias)
                except (NotImplementedError, RuntimeError, ValueError) as e:
                    warnings.warn(f"softmax auto: cuDNN refused {q.shape} {q.dtype} ({e}); "
                                  "using XLA", stacklevel=2)
                    path = "xla"
            return _fused.KERNELS[path](q, k, v, mask, causal, bias)  # [B, Lq, H, D]
        full_mask = combine_masks(mask, causal, q.shape[1], k.shape[1])  # [B|1, 1, Lq, Lk]
        weights = self.attention_weights(
            scaled_dot_logits(q, k), full_mask, bias=bias, deterministic=deterministic
        )  # [B, H, Lq, Lk] float32
        return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = Softmax
