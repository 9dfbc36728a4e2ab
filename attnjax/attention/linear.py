"""Linear attention: a positive feature map in place of the softmax kernel.

Paper: Katharopoulos et al. 2020, "Transformers are RNNs: Fast Autoregressive Transformers with
Linear Attention" (arXiv:2006.16236).
Idea: replace exp(q·k) by φ(q)·φ(k) with φ(x) = elu(x) + 1 > 0. Associativity then gives
  non-causal: out_i = φ(q_i)ᵀ S / (φ(q_i)ᵀ z + eps),  S = Σ_j φ(k_j) v_jᵀ,  z = Σ_j φ(k_j);
  causal:     the same with S_i, z_i summed over j <= i only — an RNN with state (S, z).
The causal form here is chunked (no L x L matrix): the sequence is cut into chunks of C; within a
chunk, a C x C causal product φ(Q_c) φ(K_c)ᵀ; across chunks, the state (S, z) summed over all
earlier chunks (an exclusive cumulative sum over per-chunk states). There is no 1/√d scaling, as
in the paper. Padded keys contribute nothing (φ(k) and v zeroed there); a query with no visible
key outputs 0. All arithmetic is in float32.
Complexity per head (d = head_dim): non-causal time O((L_q + L_k) · d²), memory O(d²); causal
chunked time O(L · C · d + L · d²), memory O(L · C + (L / C) · d²); decoding state d² + d.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from attnjax.attention._kernel_features import causal_sums, noncausal_sums
from attnjax.attention.base import AttentionBase, Capabilities, CapabilityError, repeat_kv


def feature_map(x):
    """φ(x) = elu(x) + 1, elementwise and strictly positive."""
    return jax.nn.elu(x) + 1.0


class Linear(AttentionBase):
    """φ(q) (φ(k)ᵀ v) / (φ(q) Σ φ(k)) with φ = elu + 1; causal via a chunked prefix sum.

    Attributes:
      chunk_size: block length C of the causal form (any L; the last chunk is zero-padded).
        Trades the C x C intra-chunk work against the number of chunk states kept.
      eps: added to the normaliser φ(q)ᵀz, so a query with no visible key gives 0, not NaN.
    """

    chunk_size: int = 64
    eps: float = 1e-6
    small_settings: ClassVar[dict] = {"chunk_size": 5}  # chunk boundaries show at L = 13

    # cross attention: non-causal only; causal needs q_len == kv_len
    capabilities = Capabilities(causal=True, cross_attention=True, padding_mask=True)

    def flops(self, q_len, kv_len, head_dim):
        # state S, z: Lk·d·(d+1) multiply-adds; read-out φ(q)ᵀS, φ(q)ᵀz: Lq·d·(d+1); the causal
        # chunked form adds the C x C intra-chunk products, ~2 · L · C · d multiply-adds.
        state = 2.0 * (q_len + kv_len) * head_dim * (head_dim + 1)
        return state + 4.0 * q_len * min(self.chunk_size, q_len) * head_dim

    def state_size(self, head_dim):
        return head_dim * head_dim + head_dim  # S = Σ φ(k) vᵀ and z = Σ φ(k)

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if causal and q.shape[1] != k.shape[1]:
            raise CapabilityError(
                f"attention 'linear' causal mode needs q_len == kv_len; got {q.shape[1]} "
                f"and {k.shape[1]}"
            )
        if self.chunk_size < 1:
            raise ValueError(f"linear chunk_size must be >= 1, got {self.chunk_size}")
        heads = q.shape[2]
        fq = feature_map(q.astype(jnp.float32))  # [B, Lq, H, D]
        fk = feature_map(k.astype(jnp.float32))  # [B, Lk, KV, D]
        v32 = v.astype(jnp.float32)  # [B, Lk, KV, E]
        if mask is not None:
            real = mask[:, :, None, None]  # [B, Lk, 1, 1]
            fk = jnp.where(real, fk, 0.0)
            v32 = jnp.where(real, v32, 0.0)
        fk, v32 = repeat_kv(fk, heads), repeat_kv(v32, heads)  # [B, Lk, H, D], [B, Lk, H, E]
        if causal:  # chunked prefix sums, shared with performer / cosformer / based
            num, den = causal_sums(fq, fk, v32, self.chunk_size)  # [B,L,H,E], [B,L,H]
        else:
            num, den = noncausal_sums(fq, fk, v32)  # [B, Lq, H, E], [B, Lq, H]
        out = num / (den[..., None] + self.eps)  # [B, Lq, H, E]
        return out.astype(q.dtype)


VARIANT = Linear
