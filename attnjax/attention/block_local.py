"""Block-local attention: non-overlapping blocks, each attending only within itself.

Papers: Qiu et al. 2019, "Blockwise Self-Attention for Long Document Understanding"
(arXiv:1911.02972); the 1-D local attention of Parmar et al. 2018, "Image Transformer"
(arXiv:1802.05751).
Idea: cut the sequence into blocks of b = block_size positions (the last one zero-padded to b,
its padding hidden as keys and dropped as queries); query i sees key j only if both lie in the
same block (and j <= i when causal): softmax(q·kᵀ/√d) v per block. b >= L is plain softmax.
Bias (broadcastable to [B, H, L, L]) is cut into its diagonal blocks; soft-capping and attention
dropout act per block through `attention_weights`. The weights live as [B · n, H, b, b] blocks
and are not recorded (attention_weights=False): the contract's [B, H, L, L] would cost O(L²).
Padded keys are hidden; a query with no visible key outputs 0.
Complexity: time O(L · b · d) and memory O(L · b) per head (a dense bias is O(L²) by itself);
causal decoding keeps the current block's keys and values, 2 · b · d per head.
Cross attention is not supported: blocks need query and key positions on one axis.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp

from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    scaled_dot_logits,
    weighted_values,
)


def diagonal_blocks(bias, length: int, num_blocks: int, block: int):
    """bias broadcastable to [B, H, L, L] -> its diagonal blocks [B', H', n, b, b] (zero-padded)."""
    bias = jnp.asarray(bias, jnp.float32)
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)  # [B', H', L|1, L|1]
    bias = jnp.broadcast_to(bias, (*bias.shape[:2], length, length))  # [B', H', L, L]
    pad = num_blocks * block - length
    bias = jnp.pad(bias, [(0, 0), (0, 0), (0, pad), (0, pad)])
    bias = bias.reshape(*bias.shape[:2], num_blocks, block, num_blocks, block)
    return jnp.moveaxis(jnp.diagonal(bias, axis1=2, axis2=4), -1, 2)  # [B', H', n, b, b]


class BlockLocal(AttentionBase):
    """Softmax attention within non-overlapping blocks of block_size positions.

    Attributes:
      block_size: b >= 1; b >= L gives plain softmax attention.
    """

    block_size: int = 64
    small_settings: ClassVar[dict] = {"block_size": 4}  # 3 full blocks and 1 of 1 at L = 13

    capabilities = Capabilities(cross_attention=False, attention_weights=False, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        block = min(self.block_size, q_len)
        return 4.0 * -(-q_len // block) * block * block * head_dim  # n blocks of b x b

    def state_size(self, head_dim):
        return 2 * self.block_size * head_dim  # the current block's keys and values

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.block_size < 1:
            raise ValueError(f"block_local block_size must be >= 1, got {self.block_size}")
        batch, length = q.shape[:2]
        block = min(self.block_size, length)
        n = -(-length // block)  # number of blocks
        pad = n * block - length

        def split(x):  # [B, L, H, X] -> [B · n, b, H, X]
            x = jnp.pad(x, [(0, 0), (0, pad), (0, 0), (0, 0)])
            return x.reshape(batch * n, block, *x.shape[2:])

        real = jnp.arange(n * block) < length  # [n · b] not block padding
        real = real[None] if mask is None else real & jnp.pad(mask, [(0, 0), (0, pad)])
        visible = jnp.broadcast_to(real, (batch, n * block)).reshape(batch * n, 1, 1, block)
        if causal:
            visible = visible & jnp.tril(jnp.ones((block, block), bool))  # [B · n, 1, b, b]
        if bias is not None:
            bias = diagonal_blocks(bias, length, n, block)  # [B', H', n, b, b]
            bias = jnp.broadcast_to(bias, (batch, *bias.shape[1:]))  # [B, H', n, b, b]
            bias = jnp.moveaxis(bias, 2, 1).reshape(batch * n, *bias.shape[1:2], block, block)
        weights = self.attention_weights(
            scaled_dot_logits(split(q), split(k)), visible, bias=bias, deterministic=deterministic
        )  # [B · n, H, b, b] float32, not recorded
        out = weighted_values(weights, split(v))  # [B · n, b, H, E]
        return out.reshape(batch, n * block, *out.shape[2:])[:, :length].astype(q.dtype)


VARIANT = BlockLocal
