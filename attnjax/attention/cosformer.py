"""cosFormer: linear attention with ReLU features and a cosine locality re-weighting.

Paper: Qin et al. 2022, "cosFormer: Rethinking Softmax in Attention" (arXiv:2202.08791).
Idea: the score of query i and key j is
  s_ij = ReLU(q_i)·ReLU(k_j) · cos(π/2 · (i - j) / M),   out_i = Σ_j s_ij v_j / Σ_j s_ij,
non-negative (ReLU) and biased towards nearby tokens (cos falls as |i - j| grows). Because
cos(θ_i - θ_j) = cos θ_i cos θ_j + sin θ_i sin θ_j with θ_i = π/2 · i / M, the score factors into
features of size 2d, φ(x_i) = [ReLU(x_i) cos θ_i, ReLU(x_i) sin θ_i], and the attention stays
linear (see `_kernel_features`): non-causal via Σ_j φ(k_j) v_jᵀ, causal via chunked prefix sums.
M: `reweight_length` if > 0 (needed for length-independent causal decoding; it must be >= the
sequence length, so that |i - j| < M and every cosine is positive), else max(L_q, L_k), as the
paper's code does. Positions are token indices, so padding does not move them; padded keys get
zero features and values. Cross attention: non-causal only (queries and keys each indexed from
0). No 1/√d scaling (ReLU features are scale-free up to eps), as in the paper.
Complexity per head (d = head_dim, 2d features): non-causal time O((L_q + L_k) · d²), memory
O(d²); causal chunked time O(L · C · d + L · d²), memory O(L · C + (L / C) · d²); decoding
state 2d · d + 2d (and the position i).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from attnjax.attention._kernel_features import (
    causal_sums,
    kernel_flops,
    noncausal_sums,
    normalise,
    zero_padded,
)
from attnjax.attention.base import AttentionBase, Capabilities, CapabilityError, repeat_kv


def cos_features(x, reweight_length: int):
    """x [B, L, H, d] -> [B, L, H, 2d]: [ReLU(x) cos θ, ReLU(x) sin θ], θ_i = π/2 · i / M."""
    theta = (jnp.pi / 2) * jnp.arange(x.shape[1], dtype=jnp.float32) / reweight_length  # [L]
    theta = theta[None, :, None, None]  # [1, L, 1, 1]
    r = jax.nn.relu(x)
    return jnp.concatenate([r * jnp.cos(theta), r * jnp.sin(theta)], axis=-1)


class CosFormer(AttentionBase):
    """ReLU linear attention re-weighted by cos(π/2 · (i - j) / M).

    Attributes:
      reweight_length: M; 0 means max(q_len, kv_len). A positive M must be >= every length.
      chunk_size: block length C of the causal chunked prefix sum.
      eps: added to the normaliser, so a query with no visible key gives 0, not NaN.
    """

    reweight_length: int = 0
    chunk_size: int = 64
    eps: float = 1e-6
    small_settings: ClassVar[dict] = {"chunk_size": 5}  # chunk boundaries show at L = 13

    capabilities = Capabilities(causal=True, cross_attention=True, padding_mask=True)

    def flops(self, q_len, kv_len, head_dim):
        return kernel_flops(q_len, kv_len, 2 * head_dim, head_dim, self.chunk_size)

    def state_size(self, head_dim):
        return 2 * head_dim * head_dim + 2 * head_dim  # Σ φ(k) vᵀ and Σ φ(k), 2d features

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        q_len, kv_len, heads = q.shape[1], k.shape[1], q.shape[2]
        if causal and q_len != kv_len:
            raise CapabilityError(
                f"attention 'cosformer' causal mode needs q_len == kv_len; got {q_len} and {kv_len}"
            )
        if self.chunk_size < 1:
            raise ValueError(f"cosformer chunk_size must be >= 1, got {self.chunk_size}")
        longest = max(q_len, kv_len)
        if 0 < self.reweight_length < longest:
            raise ValueError(
                f"cosformer reweight_length {self.reweight_length} < sequence length {longest}: "
                "the cosine weights would turn negative"
            )
        m = self.reweight_length or longest
        fq = cos_features(q.astype(jnp.float32), m)  # [B, Lq, H, 2d]
        fk = cos_features(k.astype(jnp.float32), m)  # [B, Lk, KV, 2d]
        fk, v32 = zero_padded(mask, fk, v.astype(jnp.float32))  # padded keys: φ(k) = v = 0
        fk, v32 = repeat_kv(fk, heads), repeat_kv(v32, heads)  # [B, Lk, H, 2d], [B, Lk, H, E]
        if causal:
            num, den = causal_sums(fq, fk, v32, self.chunk_size)  # [B, L, H, E], [B, L, H]
        else:
            num, den = noncausal_sums(fq, fk, v32)  # [B, Lq, H, E], [B, Lq, H]
        return normalise(num, den, self.eps).astype(q.dtype)  # [B, Lq, H, E]


VARIANT = CosFormer
