"""Performer (FAVOR+): softmax attention estimated with positive orthogonal random features.

Paper: Choromanski et al. 2020, "Rethinking Attention with Performers" (arXiv:2009.14794).
Idea: exp(q·k/√d) = E_w[φ(x_q) · φ(x_k)] with x = d^(-1/4) · x and the positive features
  φ(x) = exp(W x - ‖x‖² / 2) / √m,   W [m, d] with rows w_r ~ N(0, I_d),
so softmax attention becomes linear attention with m features (see `_kernel_features`):
  out_i = Σ_j φ(q_i)·φ(k_j) v_j / Σ_j φ(q_i)·φ(k_j),  causal: j <= i (chunked prefix sums).
W is drawn as orthogonal blocks: each block of d rows is a Haar-random orthogonal matrix (QR of a
Gaussian matrix), and each row is rescaled by an independent chi(d) norm (the norm of a Gaussian
vector), so rows are marginally N(0, I_d) but orthogonal within a block — lower variance
(the paper's ORF). W is fixed: drawn with NumPy from the `seed` setting, shared by all heads and
layers with the same head_dim, never trained, never redrawn (the paper's periodic feature
redrawing is not implemented).
Numerical stabilisation (exact: the subtracted terms cancel in the normalisation):
  q features: the row max of W x - ‖x‖²/2 is subtracted per query (only that query is read);
  k features: per key, its own max is subtracted and carried as a log-scale a_j, and the
  shared kernel rescales by the running max of a_j over the keys each query sees (unpadded,
  j <= i when causal) — never a max over all keys, which would leak the future and padding.
Normalisation: exact division, no eps (the stabilised denominator has no fixed scale, so an eps
would bias small ones); a query that sees no key outputs 0. Padded keys get zero features and
values. Cross attention: non-causal only.
Complexity per head (m features, d = head_dim): non-causal time O((L_q + L_k) · m · d),
memory O(m · d); causal chunked time O(L · C · (m + d) + L · m · d), memory
O(L · C + (L / C) · m · d); decoding state m · d + m.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from attnjax.attention._kernel_features import (
    NEG,
    causal_sums,
    kernel_flops,
    noncausal_sums,
    normalise,
    zero_padded,
)
from attnjax.attention.base import AttentionBase, Capabilities, CapabilityError, repeat_kv


@functools.lru_cache(maxsize=64)
def orthogonal_features(seed: int, num_features: int, dim: int) -> np.ndarray:
    """W [num_features, dim] float32 (read-only): orthogonal Gaussian blocks with chi(dim) row
    norms, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(-(-num_features // dim)):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        blocks.append((q * np.sign(np.diag(r))).T)  # sign fix: unique, Haar-random; rows ⊥
    rows = np.concatenate(blocks)[:num_features]  # [m, d], unit rows
    norms = np.linalg.norm(rng.standard_normal((num_features, dim)), axis=1)  # chi(d), [m]
    w = (rows * norms[:, None]).astype(np.float32)
    w.setflags(write=False)
    return w


def positive_features(x, w):
    """x [B, L, H, d] (already scaled by d^(-1/4)), w [m, d] -> (features [B, L, H, m], log-scale
    [B, L, H]): φ(x) = features · exp(log-scale), features <= 1/√m (row max subtracted)."""
    logits = jnp.einsum("blhd,md->blhm", x, w) - 0.5 * jnp.sum(x * x, -1, keepdims=True)
    top = jax.lax.stop_gradient(logits.max(axis=-1))  # [B, L, H]
    return jnp.exp(logits - top[..., None]) / np.sqrt(w.shape[0]), top


class Performer(AttentionBase):
    """FAVOR+ linear attention with m positive orthogonal random features.

    Attributes:
      num_features: m, the number of random features (the estimator's error falls as 1/√m).
      seed: fixes the random features W (NumPy generator), so runs are reproducible.
      chunk_size: block length C of the causal chunked prefix sum.
    """

    num_features: int = 64
    seed: int = 0
    chunk_size: int = 64
    # 12 features at head_dim 8: one full orthogonal block and a truncated one; chunks of 5
    small_settings: ClassVar[dict] = {"num_features": 12, "chunk_size": 5}

    capabilities = Capabilities(causal=True, cross_attention=True, padding_mask=True)

    def flops(self, q_len, kv_len, head_dim):
        # W x for every query and key, then the linear-attention sums with m features
        features = 2.0 * (q_len + kv_len) * self.num_features * head_dim
        m, c = self.num_features, self.chunk_size
        return features + kernel_flops(q_len, kv_len, m, head_dim, c)

    def state_size(self, head_dim):
        return self.num_features * head_dim + self.num_features  # Σ φ(k) vᵀ and Σ φ(k)

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if causal and q.shape[1] != k.shape[1]:
            raise CapabilityError(
                f"attention 'performer' causal mode needs q_len == kv_len; got {q.shape[1]} "
                f"and {k.shape[1]}"
            )
        if self.num_features < 1 or self.chunk_size < 1:
            raise ValueError("performer num_features and chunk_size must be >= 1")
        heads, dim = q.shape[2], q.shape[3]
        w = jnp.asarray(orthogonal_features(self.seed, self.num_features, dim))  # [m, d]
        scale = dim**-0.25  # x·y/√d = (d^(-1/4) x)·(d^(-1/4) y)
        fq, _ = positive_features(q.astype(jnp.float32) * scale, w)  # [B, Lq, H, m]
        fk, a = positive_features(k.astype(jnp.float32) * scale, w)  # [B, Lk, KV, m], [B,Lk,KV]
        fk, v32 = zero_padded(mask, fk, v.astype(jnp.float32))  # [B, Lk, KV, m], [B, Lk, KV, E]
        if mask is not None:
            a = jnp.where(mask[:, :, None], a, NEG)  # padded keys never set the stabiliser
        fk, v32, a = repeat_kv(fk, heads), repeat_kv(v32, heads), repeat_kv(a, heads)
        if causal:
            num, den = causal_sums(fq, fk, v32, self.chunk_size, a)  # [B,L,H,E], [B,L,H]
        else:
            num, den = noncausal_sums(fq, fk, v32, a)  # [B, Lq, H, E], [B, Lq, H]
        return normalise(num, den).astype(q.dtype)  # [B, Lq, H, E]; exact, no eps


VARIANT = Performer
