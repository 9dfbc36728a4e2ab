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

from attnjax.attention.base import AttentionBase, Capabilities, CapabilityError, repeat_kv


def feature_map(x):
    """φ(x) = elu(x) + 1, elementwise and strictly positive."""
    return jax.nn.elu(x) + 1.0


def _chunked_causal(fq, fk, v, chunk: int):
    """Σ_{j<=i} over a sequence of chunks. fq, fk: [B, L, H, D], v: [B, L, H, E] (float32).

    Returns (num [B, L, H, E], den [B, L, H]) with num_i = Σ_{j<=i} (φq_i·φk_j) v_j and
    den_i = Σ_{j<=i} φq_i·φk_j.
    """
    batch, length, heads, _ = fq.shape
    chunk = min(chunk, length)
    n = -(-length // chunk)  # number of chunks
    pad = [(0, 0), (0, n * chunk - length), (0, 0), (0, 0)]  # padded keys: φ(k) = v = 0

    def split(x):  # [B, L, H, X] -> [B, n, C, H, X]
        return jnp.pad(x, pad).reshape(batch, n, chunk, heads, x.shape[-1])

    fq, fk, v = split(fq), split(fk), split(v)
    tri = jnp.tril(jnp.ones((chunk, chunk), dtype=bool))[:, None, :]  # [C, 1, C]
    scores = jnp.einsum("bncht,bnsht->bnchs", fq, fk)  # [B, n, C, H, C]
    scores = jnp.where(tri, scores, 0.0)  # keep s <= c within the chunk
    num = jnp.einsum("bnchs,bnshe->bnche", scores, v)  # [B, n, C, H, E]
    den = scores.sum(axis=-1)  # [B, n, C, H]

    chunk_s = jnp.einsum("bnshd,bnshe->bnhde", fk, v)  # [B, n, H, D, E]
    chunk_z = fk.sum(axis=2)  # [B, n, H, D]
    # State from strictly earlier chunks (exclusive prefix sum): chunk m uses chunks < m.
    prev_s = jnp.cumsum(chunk_s, axis=1)[:, :-1]  # [B, n-1, H, D, E]
    prev_s = jnp.pad(prev_s, [(0, 0), (1, 0), (0, 0), (0, 0), (0, 0)])  # [B, n, H, D, E]
    prev_z = jnp.pad(jnp.cumsum(chunk_z, axis=1)[:, :-1], [(0, 0), (1, 0), (0, 0), (0, 0)])
    num = num + jnp.einsum("bnchd,bnhde->bnche", fq, prev_s)  # [B, n, C, H, E]
    den = den + jnp.einsum("bnchd,bnhd->bnch", fq, prev_z)  # [B, n, C, H]

    num = num.reshape(batch, n * chunk, heads, -1)[:, :length]  # [B, L, H, E]
    den = den.reshape(batch, n * chunk, heads)[:, :length]  # [B, L, H]
    return num, den


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
        if causal:
            num, den = _chunked_causal(fq, fk, v32, self.chunk_size)  # [B,L,H,E], [B,L,H]
        else:
            state = jnp.einsum("bkhd,bkhe->bhde", fk, v32)  # [B, H, D, E]
            norm = fk.sum(axis=1)  # [B, H, D]
            num = jnp.einsum("bqhd,bhde->bqhe", fq, state)  # [B, Lq, H, E]
            den = jnp.einsum("bqhd,bhd->bqh", fq, norm)  # [B, Lq, H]
        out = num / (den[..., None] + self.eps)  # [B, Lq, H, E]
        return out.astype(q.dtype)


VARIANT = Linear
