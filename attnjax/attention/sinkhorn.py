"""Sparse Sinkhorn attention: each block attends to itself and to a learned soft-sorted block.

Paper: Tay, Bahri, Yang, Metzler & Juan 2020, "Sparse Sinkhorn Attention" (arXiv:2002.11296).
Idea: cut the sequence into n blocks of b positions. A sorting network (SortNet) reads a summary
of each block, here the masked mean of its keys, and scores every block position:
R_i = relu(W2 relu(W1 s_i + b1) + b2) in R^N (a two-layer ReLU network per head; N =
ceil(max_length / b) outputs, the first n used). Sinkhorn balancing of exp(R / temperature),
`sinkhorn_iters` alternations of row then column normalisation in log space (Gumbel-free), gives
a soft permutation P [n, n], approximately doubly stochastic. The sorted keys and values of block
i are Σ_j P_ij K_j, Σ_j P_ij V_j (whole blocks mixed slot by slot), and block i's queries attend
with one softmax to the b sorted keys and to their own block's b keys (local attention, as in
the paper's Sinkhorn + local combination), logits q·k/√d.
Padding: summaries are means over real keys only; a sorted slot mixes only real keys,
Σ_j P_ij m_js k_js / Σ_j P_ij m_js (m = 1 for a real key), and is hidden when no real key feeds
it. Without padding this divides by the row sums of P, which Sinkhorn leaves within its residual
error of 1; the paper uses P·K as is. The sequence is zero-padded to n · b; that tail is padding.
Causal mode (the paper's causal Sinkhorn balancing, made exact): block i may be sorted only to
earlier blocks, P_ij = 0 for j >= i; the summary of block i that drives row i is the mean of the
real keys up to and including block i's first position (all of the block's queries may see
them); and row i of P is row i of the Sinkhorn balancing of rows <= i alone. (One masked
balancing of the whole matrix would let later blocks' rows into every column normalisation,
hence leak the future.) Each sorted block then holds only keys before its queries; the local
block is masked causally; block 0 has no sorted block. With lower-triangular support, full
balancing tends to "each block takes the block before it".
Complexity per head (L = n · b, N sortnet outputs): attention O(L · b · d), sorting
O(n² · b · d) = O(L² d / b), Sinkhorn O(iters · n²) (causal: O(iters · n³), every prefix is
balanced), memory O(L · b + n²) (causal O(n³)). No explicit [L, L] logits (the sorted keys are
mixtures), so no additive bias, soft-capping or attention dropout, and no recorded weights.
Parameters are sized by max_length (N); cross attention is not supported.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention._length_sized import require_max_length
from attnjax.attention._recurrence import from_chunks, mask_keys, to_chunks
from attnjax.attention.base import AttentionBase, Capabilities, masked_softmax, repeat_kv


def sinkhorn(log_p, iters: int, mask=None):
    """Log-space Sinkhorn balancing: `iters` times normalise the rows (last axis), then the
    columns (axis -2), of exp(log_p). Entries where `mask` (broadcastable) is False are held at
    exactly 0 and excluded from every sum; an empty row or column stays 0. Returns exp(...)."""
    if mask is None:
        def step(_, x):
            x = x - jax.nn.logsumexp(x, axis=-1, keepdims=True)
            return x - jax.nn.logsumexp(x, axis=-2, keepdims=True)

        return jnp.exp(jax.lax.fori_loop(0, iters, step, log_p))

    shape = jnp.broadcast_shapes(log_p.shape, mask.shape)
    log_p, mask = jnp.broadcast_to(log_p, shape), jnp.broadcast_to(mask, shape)

    def normalise(x, axis):
        any_ = jnp.any(mask, axis=axis, keepdims=True)
        top = jnp.max(jnp.where(mask, x, -jnp.inf), axis=axis, keepdims=True)
        top = jax.lax.stop_gradient(jnp.where(any_, top, 0.0))  # shift-invariant
        total = jnp.sum(jnp.where(mask, jnp.exp(jnp.where(mask, x, top) - top), 0.0), axis=axis,
                        keepdims=True)
        return jnp.where(mask, x - top - jnp.log(jnp.where(any_, total, 1.0)), 0.0)

    def step(_, x):
        return normalise(normalise(x, -1), -2)

    x = jax.lax.fori_loop(0, iters, step, jnp.where(mask, log_p, 0.0))
    return jnp.where(mask, jnp.exp(x), 0.0)


def causal_prefix_mask(n: int):
    """[n, n, n] bool: for prefix i, entry (r, c) takes part iff r <= i and c < r."""
    i, r, c = (jnp.arange(n).reshape(shape) for shape in ((n, 1, 1), (1, n, 1), (1, 1, n)))
    return (r <= i) & (c < r)


class SortNet(nn.Module):
    """Block summaries [B, H, n, D] -> soft permutation P [B, H, n, n] (rows: sorted blocks)."""

    max_blocks: int  # N: the sortnet's outputs, one per block position
    temperature: float
    iters: int

    @nn.compact
    def __call__(self, summary, causal: bool):
        heads, dim, n = summary.shape[1], summary.shape[3], summary.shape[2]
        # [W1 | W2] and [b1 | b2] in one parameter each (one random draw); both layers have
        # fan-in head_dim (the hidden width is head_dim)
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                            (heads, dim, dim + self.max_blocks))  # [H, D, D + N]
        bias = self.param("bias", nn.initializers.zeros, (heads, dim + self.max_blocks))
        hidden = nn.relu(jnp.einsum("bhnd,hde->bhne", summary, kernel[..., :dim])
                         + bias[:, None, :dim])  # [B, H, n, D]
        scores = nn.relu(jnp.einsum("bhne,hem->bhnm", hidden, kernel[..., dim:])
                         + bias[:, None, dim:])  # [B, H, n, N]
        log_p = scores[..., :n] / self.temperature  # [B, H, n, n]
        if not causal:
            return sinkhorn(log_p, self.iters)  # [B, H, n, n]
        # row i: balance the rows <= i of the strictly lower triangle, keep row i
        prefix = sinkhorn(log_p[:, :, None], self.iters, causal_prefix_mask(n))  # [B,H,n,n,n]
        rows = jnp.arange(n)
        return prefix[:, :, rows, rows, :]  # [B, H, n, n]


class Sinkhorn(AttentionBase):
    """Block-local attention plus attention to a Sinkhorn-sorted block.

    Attributes:
      block_size: b; the sequence is cut into ceil(L / b) blocks (b >= L: one block, softmax).
      sinkhorn_iters: row + column normalisation rounds of the soft permutation.
      temperature: the Sinkhorn logits are R / temperature (lower: closer to a permutation).
    """

    block_size: int = 64
    sinkhorn_iters: int = 8
    temperature: float = 0.75
    # 4 blocks (the last with 1 real position) at L = 13; the sortnet is sized by max_length
    small_settings: ClassVar[dict] = {"block_size": 4, "max_length": 16}

    capabilities = Capabilities(cross_attention=False, needs_max_length=True)

    def flops(self, q_len, kv_len, head_dim):
        # attention over 2b keys per query, sorting P·K and P·V, the sortnet and the summaries;
        # Sinkhorn itself (~ 6 · iters · n² elementwise, n³ when causal) is not counted.
        block = min(self.block_size, q_len)
        n = -(-q_len // block)
        outputs = -(-self.max_length // self.block_size) if self.max_length else n
        attention = 4.0 * q_len * 2 * block * head_dim
        sorting = 4.0 * n * n * block * head_dim
        sortnet = 2.0 * n * head_dim * (head_dim + outputs)
        return attention + sorting + sortnet + q_len * head_dim

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        require_max_length(self)
        if self.block_size < 1 or self.sinkhorn_iters < 0 or self.temperature <= 0:
            raise ValueError(
                f"sinkhorn needs block_size >= 1, sinkhorn_iters >= 0 and temperature > 0; got "
                f"{self.block_size}, {self.sinkhorn_iters}, {self.temperature}"
            )
        batch, length, heads, dim = q.shape
        block = min(self.block_size, length)
        n = -(-length // block)
        real = jnp.ones((batch, length), bool) if mask is None else mask  # [B, L]
        k32, v32 = (repeat_kv(x.astype(jnp.float32), heads) for x in (k, v))  # [B, L, H, D]
        k32, v32 = mask_keys(real, k32, v32)  # exact zeros at padded keys

        def blocks(x):  # [B, L, H, X] -> [B, H, n, b, X] (zero tail)
            return jnp.moveaxis(to_chunks(x, block), 3, 1)

        qb, kb, vb = blocks(q.astype(jnp.float32)), blocks(k32), blocks(v32)
        realb = to_chunks(real, block)  # [B, n, b], the tail False

        # block summaries: masked means of the keys
        if causal:  # over positions <= the block's first one
            total = jnp.cumsum(k32, axis=1)[:, ::block]  # [B, n, H, D]
            count = jnp.cumsum(real, axis=1)[:, ::block]  # [B, n]
        else:
            total = jnp.sum(to_chunks(k32, block), axis=2)  # [B, n, H, D]
            count = jnp.sum(realb, axis=2)  # [B, n]
        summary = total / jnp.maximum(count, 1)[:, :, None, None].astype(jnp.float32)
        summary = jnp.moveaxis(summary, 2, 1)  # [B, H, n, D]
        max_blocks = -(-self.max_length // self.block_size)
        perm = SortNet(max_blocks, self.temperature, self.sinkhorn_iters, name="sort")(
            summary, causal)  # [B, H, n, n]

        # sorted blocks: slot s of sorted block i mixes slot s of the blocks j, real keys only
        feed = jnp.einsum("bhij,bjs->bhis", perm, realb.astype(jnp.float32))  # [B, H, n, b]
        sorted_real = feed > 0
        scale = 1.0 / jnp.where(sorted_real, feed, 1.0)[..., None]  # [B, H, n, b, 1]
        ks = jnp.einsum("bhij,bhjsd->bhisd", perm, kb) * scale  # [B, H, n, b, D]
        vs = jnp.einsum("bhij,bhjsd->bhisd", perm, vb) * scale  # [B, H, n, b, E]

        local = realb[:, None, :, None, :]  # [B, 1, n, 1, b]
        if causal:
            local = local & jnp.tril(jnp.ones((block, block), bool))  # [B, 1, n, b, b]
        visible = jnp.concatenate([
            jnp.broadcast_to(sorted_real[:, :, :, None, :], (batch, heads, n, block, block)),
            jnp.broadcast_to(local, (batch, heads, n, block, block)),
        ], axis=-1)  # [B, H, n, b, 2b]: sorted keys, then the block's own keys
        keys = jnp.concatenate([ks, kb], axis=3)  # [B, H, n, 2b, D]
        values = jnp.concatenate([vs, vb], axis=3)  # [B, H, n, 2b, E]
        logits = jnp.einsum("bhnsd,bhnkd->bhnsk", qb, keys) / math.sqrt(dim)  # [B,H,n,b,2b]
        weights = masked_softmax(logits, visible)  # [B, H, n, b, 2b], hidden keys exactly 0
        out = jnp.einsum("bhnsk,bhnke->bnshe", weights, values)  # [B, n, b, H, E]
        return from_chunks(out, length).astype(q.dtype)  # [B, L, H, E]


VARIANT = Sinkhorn
