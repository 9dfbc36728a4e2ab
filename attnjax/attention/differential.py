"""Differential attention: the difference of two softmax maps cancels common-mode attention.

Paper: Ye et al. 2024, "Differential Transformer" (arXiv:2410.05258).
Idea: split each head's q and k into halves (q1, q2), (k1, k2) of d' = d/2 (d even); v keeps d.
  weights = softmax(q1·k1ᵀ/√d') - λ softmax(q2·k2ᵀ/√d'),
  λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init   (learned vectors of d', N(0, 0.1) init),
  out = (1 - λ_init) · RMSNorm(weights · v)   (per head over d, eps 1e-5, learned scale [d]).
As in the paper's code, λ and the RMSNorm scale are shared by the heads of a layer. The paper's
λ_init = 0.8 - 0.6 · exp(-0.3 · (layer - 1)) needs the layer index, which a variant is not given:
it is the setting `lambda_init` (0.8, the deep-layer value).
Bias and soft-capping act on both logit maps, both softmaxes see the same mask (exact zeros at
hidden keys), and attention dropout acts on the difference. The weights are not recorded: they
are signed and their rows sum to 1 - λ, not the contract's distribution (attention_weights=False).
A query with no visible key gets weights 0, output RMSNorm(0) = 0.
Complexity: time O(Lq · Lk · d) (two maps of d/2 cost one of d, plus weights · v) and memory
O(Lq · Lk) per head (reference path; the default tiled path, see _scored.py, runs the two maps
through the blockwise kernel, O(block² + L · d), and subtracts their outputs: (A1 - λ A2) v =
A1 v - λ A2 v).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._blockwise import blockwise_attention
from attnjax.attention._scored import takes_tiled_path
from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    combine_masks,
    dense_flops,
    masked_softmax,
    scaled_dot_logits,
    weighted_values,
)

NORM_EPS = 1e-5  # the paper's RMSNorm epsilon


class Differential(AttentionBase):
    """(softmax(q1 k1ᵀ/√d') - λ softmax(q2 k2ᵀ/√d')) v, per-head RMSNorm, · (1 - λ_init).

    Attributes:
      lambda_init: λ_init (the paper: 0.8 - 0.6 · exp(-0.3 · (layer - 1)) for layer 1, 2, ...).
      implementation: 'auto' (tiled unless attention dropout is active), 'reference' or
        'blockwise' (see _scored.BlockwiseScored).
      block_size: query and key block of the tiled path.
    """

    lambda_init: float = 0.8
    implementation: str = "auto"
    block_size: int = 512
    small_settings: ClassVar[dict] = {"block_size": 4}

    capabilities = Capabilities(attention_weights=False, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        # two d/2 logit maps (= one of d), weights · v, the λ-combination and the RMSNorm
        return dense_flops(q_len, kv_len, head_dim) + 2.0 * q_len * kv_len + 4.0 * q_len * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        (batch, q_len, heads, dim), kv_len = q.shape, k.shape[1]
        if dim % 2:
            raise ValueError(f"differential attention needs an even head_dim, got {dim}")
        half = dim // 2
        init = nn.initializers.normal(0.1)
        lq1, lk1, lq2, lk2 = (self.param(n, init, (half,))
                              for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"))
        scale = self.param("norm_scale", nn.initializers.ones, (v.shape[3],))  # [E]
        lam = jnp.exp(jnp.dot(lq1, lk1)) - jnp.exp(jnp.dot(lq2, lk2)) + self.lambda_init  # []

        q2 = q.reshape(batch, q_len, heads, 2, half)  # [B, Lq, H, 2, D/2]
        k2 = k.reshape(*k.shape[:3], 2, half)  # [B, Lk, KV, 2, D/2]
        if takes_tiled_path(self, deterministic):
            maps = [blockwise_attention(q2[..., i, :], k2[..., i, :], v.astype(jnp.float32),
                                        mask=mask, causal=causal, bias=bias,
                                        soft_cap=self.logit_soft_cap, block_size=self.block_size)
                    for i in (0, 1)]  # 2 x [B, Lq, H, E] float32, each /√(D/2)
            out = maps[0] - lam * maps[1]
            return self._finish(out, scale).astype(q.dtype)
        logits = jnp.stack([scaled_dot_logits(q2[..., i, :], k2[..., i, :]) for i in (0, 1)],
                           axis=2)  # [B, H, 2, Lq, Lk]: /√(D/2)
        visible = combine_masks(mask, causal, q_len, kv_len)  # [B|1, 1, Lq, Lk] or None
        if visible is not None:
            visible = visible[:, :, None]  # [B|1, 1, 1, Lq, Lk], both maps
        if bias is not None:
            bias = jnp.asarray(bias)
            bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)[:, :, None]  # both maps

        def difference(logits, visible):  # [B, H, 2, Lq, Lk] -> [B, H, Lq, Lk]
            w = masked_softmax(logits, visible)
            return w[:, :, 0] - lam * w[:, :, 1]

        weights = self.attention_weights(logits, visible, bias=bias, deterministic=deterministic,
                                         normalize=difference)  # [B, H, Lq, Lk], not recorded
        out = weighted_values(weights, v.astype(jnp.float32))  # [B, Lq, H, E] float32
        return self._finish(out, scale).astype(q.dtype)

    def _finish(self, out, scale):
        """Per-head RMSNorm with the learned scale, times (1 - λ_init)."""
        out = out * jax.lax.rsqrt(jnp.mean(out * out, axis=-1, keepdims=True) + NORM_EPS) * scale
        return out * (1.0 - self.lambda_init)


VARIANT = Differential
