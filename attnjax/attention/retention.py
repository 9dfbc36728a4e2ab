"""Retention: linear attention with a fixed exponential decay per head.

Paper: Sun et al. 2023, "Retentive Network: A Successor to Transformer for Large Language Models"
(arXiv:2307.08621).
Idea: o_n = Σ_{m<=n} γ_h^{n-m} (q_n · k_m / √d) v_m, i.e. the RNN S_n = γ_h S_{n-1} + k_nᵀ v_n,
o_n = q_n S_n, with the paper's per-head decays γ_h = 1 - 2^(-5-h), h = 0 .. H-1, and k scaled by
d^-0.5. Each head's output is then normalised by the paper's GroupNorm (one group per head, over
its d channels, per position) with a learned per-channel scale.
Three forms (`mode`), equal up to rounding:
  parallel:  (Q Kᵀ ⊙ D) V with D_nm = γ^{n-m} (n >= m), the [L, L] matrix; time O(L² · d);
  chunked:   chunks of C, parallel inside a chunk and recurrent across chunks (see _recurrence);
             time O(L · C · d + L · d²), memory O(L · C + (L / C) · d²);
  recurrent: a scan over tokens, time O(L · d²), state d² per head.
Non-causal (`causal=False`) uses the symmetric decay γ^{|n-m|} (not in the paper, which is
causal): a forward pass over m <= n plus a backward pass over m > n (parallel form: the
symmetric D). Padded keys contribute nothing (k and v are zeroed there); decay still counts
positions. A query that sees no key outputs 0 (the GroupNorm of a zero vector is 0).
Deviations: the paper's xPos rotation of q and k, its swish output gate and output projection
belong to the surrounding layer (positions / projections are the model's business here). The
paper's score normalisations (dividing D by its row sums' root and the scores by their
absolute row sums) only rescale each row, which GroupNorm undoes, so they are omitted; the
GroupNorm has a scale but no bias, so a blind query stays 0. No explicit softmax weights.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention.base import AttentionBase, Capabilities, repeat_kv

MODES = ("chunked", "recurrent", "parallel")


def head_log_decays(heads: int):
    """log γ_h = log(1 - 2^(-5-h)) for h = 0 .. H-1 (float32 [H])."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(heads, dtype=jnp.float32))))


def retention_parallel(q, k, v, log_gamma, causal: bool):
    """(Q Kᵀ ⊙ D) V; q, k [B, L, H, Dk], v [B, L, H, Dv], log_gamma [H]."""
    pos = jnp.arange(q.shape[1])
    dist = pos[:, None] - pos[None, :]  # [L, L] = n - m
    dist = dist if causal else jnp.abs(dist)
    decay = jnp.exp(jnp.maximum(dist, 0)[None] * log_gamma[:, None, None])  # [H, L, L]
    decay = jnp.where(dist[None] >= 0, decay, 0.0)  # causal: m > n gets exactly 0
    scores = jnp.einsum("bnhd,bmhd->bhnm", q, k) * decay  # [B, H, L, L]
    return jnp.einsum("bhnm,bmhe->bnhe", scores, v)  # [B, L, H, Dv]


class Retention(AttentionBase):
    """Multi-scale retention (per-head decays γ_h = 1 - 2^(-5-h)) with per-head GroupNorm.

    Attributes:
      mode: 'chunked' (training form), 'recurrent' (scan over tokens) or 'parallel' ([L, L]).
      chunk_size: chunk length C of the chunked form (any L; the last chunk is zero-padded).
      group_norm: normalise each head's output (the paper's GroupNorm); False returns raw
        retention.
      norm_eps: epsilon of the GroupNorm variance.
    """

    mode: str = "chunked"
    chunk_size: int = 64
    group_norm: bool = True
    norm_eps: float = 1e-6
    small_settings: ClassVar[dict] = {"chunk_size": 5}  # chunk boundaries show at L = 13
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows S [B, H, D, E]

    # positions of queries and keys share one axis: no cross attention
    capabilities = Capabilities(cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        if self.mode == "parallel":
            return 4.0 * q_len * kv_len * head_dim
        # the non-causal form (two passes) costs twice this; the GroupNorm ~ 5 · L · d more
        causal = rec.decay_flops(self.mode, q_len, self.chunk_size, head_dim, head_dim, False)
        return causal + 5.0 * q_len * head_dim * self.group_norm

    def state_size(self, head_dim):
        return head_dim * head_dim  # S = Σ γ^{n-m} k_mᵀ v_m

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        rec.check_settings("retention", self.mode, self.chunk_size, MODES)
        batch, length, heads, dim = q.shape
        dtype = rec.compute_dtype(q)  # float32 (float64 for float64 inputs)
        q32 = q.astype(dtype)  # [B, L, H, D]
        k32 = repeat_kv(k.astype(dtype), heads) * dim**-0.5  # [B, L, H, D]
        v32 = repeat_kv(v.astype(dtype), heads)  # [B, L, H, E]
        k32, v32 = rec.mask_keys(mask, k32, v32)
        log_gamma = head_log_decays(heads).astype(dtype)  # [H]
        if self.mode == "parallel":
            out = retention_parallel(q32, k32, v32, log_gamma, causal)  # [B, L, H, E]
        else:
            g = jnp.broadcast_to(log_gamma[:, None], (batch, length, heads, 1))  # [B, L, H, 1]
            if self.mode == "chunked":
                def run(*xs, strict=False):
                    return rec.decay_chunked(*xs, self.chunk_size, strict=strict)
            else:
                def run(*xs, strict=False):
                    out, state = rec.decay_recurrent(*xs, strict=strict)
                    if causal and not strict:  # the decoder's state S [B, H, D, E]
                        self.sow("intermediates", "recurrent_state", state)
                    return out
            out = run(q32, k32, v32, g)  # [B, L, H, E], keys m <= n
            if not causal:  # + keys m > n: the same recurrence run backwards, exclusive
                back = run(*rec.flip(q32, k32, v32, g), strict=True)
                out = out + rec.flip(back)[0]
        if self.group_norm:
            scale = self.param("group_norm_scale", nn.initializers.ones, (heads, v.shape[-1]))
            mean = out.mean(-1, keepdims=True)  # [B, L, H, 1]
            var = jnp.square(out - mean).mean(-1, keepdims=True)
            out = (out - mean) * jax.lax.rsqrt(var + self.norm_eps) * scale  # [B, L, H, E]
        return out.astype(q.dtype)


VARIANT = Retention
