"""Gated linear attention (GLA): linear attention with a data-dependent decay per key dimension.

Paper: Yang et al. 2023, "Gated Linear Attention Transformers with Hardware-Efficient Training"
(arXiv:2312.06635).
Idea: the 2-D state forgets through a data-dependent diagonal gate,
    S_t = diag(α_t) S_{t-1} + k_tᵀ v_t,   o_t = q_t S_t / √d,
    α_t = σ(k_t W_1 W_2 + b)^(1/τ) ∈ (0, 1)^d,
where W_1 [d, r], W_2 [r, d] is a learned low-rank projection per head (rank `gate_rank`) and τ
= `gate_temperature` (the paper's 16) keeps α close to 1. The paper computes the gate from the
layer input x; a variant here only sees q, k, v, so the gate is computed from the key. q is
scaled by d^-0.5 as in the authors' implementation (flash-linear-attention).
Two forms (`mode`), equal up to rounding:
  chunked:   chunks of C, parallel inside a chunk and recurrent across chunks, with decays kept
             in log space (cumulative log α, all exponents <= 0; see _recurrence). No secondary
             chunking: the intra-chunk decays are a [C, C, d] tensor per chunk. Time
             O(L · C · d + L · d²), memory O(L · C · d + (L / C) · d²) per head;
  recurrent: a scan over tokens, time O(L · d²), state d² per head.
Causal only: the paper defines no bidirectional form (causal=False raises). A padded key
contributes nothing and does not decay the state (its α is 1), so padding is invisible.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv


class GLA(AttentionBase):
    """Causal linear attention with a low-rank, key-conditioned forget gate per key dimension.

    Attributes:
      mode: 'chunked' (training form) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the chunked form (any L; the last chunk is zero-padded).
        Smaller than retention's 64 because the intra-chunk decays are a [C, C, d] tensor.
      gate_rank: rank r of the gate projection W_1 W_2.
      gate_temperature: τ in α = σ(·)^(1/τ); larger keeps α nearer 1 (slower forgetting).
    """

    mode: str = "chunked"
    chunk_size: int = 16
    gate_rank: int = 16
    gate_temperature: float = 16.0
    small_settings: ClassVar[dict] = {"chunk_size": 5, "gate_rank": 4}
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows S [B, H, D, E]

    capabilities = Capabilities(bidirectional=False, cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        gate = 4.0 * kv_len * head_dim * self.gate_rank  # k W_1 W_2
        return gate + rec.decay_flops(self.mode, q_len, self.chunk_size, head_dim, head_dim, True)

    def state_size(self, head_dim):
        return head_dim * head_dim  # S

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("gla", self.mode, self.chunk_size)
        heads, dim = q.shape[2], q.shape[3]
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        q32 = q.astype(dtype) * dim**-0.5  # [B, L, H, D]
        k32 = repeat_kv(k.astype(dtype), heads)  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]

        init = nn.initializers.lecun_normal(batch_axis=(0,))  # fan-in per head
        w1 = self.param("gate_down", init, (heads, dim, self.gate_rank))  # [H, D, r]
        w2 = self.param("gate_up", init, (heads, self.gate_rank, dim))  # [H, r, D]
        gate_bias = self.param("gate_bias", nn.initializers.zeros, (heads, dim))  # [H, D]
        logits = jnp.einsum("blhd,hdr,hrc->blhc", k32, w1, w2) + gate_bias  # [B, L, H, D]
        log_alpha = jax.nn.log_sigmoid(logits) / self.gate_temperature  # log α <= 0

        k32, v32, log_alpha = rec.mask_keys(mask, k32, v32, log_alpha)  # padded: α = 1, no kv
        if self.mode == "chunked":
            out = rec.decay_chunked(q32, k32, v32, log_alpha, self.chunk_size)
        else:
            out, state = rec.decay_recurrent(q32, k32, v32, log_alpha)
            self.sow("intermediates", "recurrent_state", state)  # S [B, H, D, E]
        return out.astype(q.dtype)  # [B, L, H, E]


VARIANT = GLA
