"""BigBird attention: sliding window + global + random keys, at block granularity.

Paper: Zaheer et al. 2020, "Big Bird: Transformers for Longer Sequences" (arXiv:2007.14062).
Idea: cut the sequence into blocks of b positions (the last one may be shorter); query block Q
sees key block K if
  window: |Q - K| <= num_window_blocks // 2 (the paper's 3 blocks: itself and one each side);
  global: Q or K is one of the first num_global_blocks blocks (the ITC form; the paper's code
          makes the first and the last block global — the last would be the future when causal);
  random: K is one of num_random_blocks blocks drawn for Q among those neither window nor global,
          fixed by `seed` (NumPy, at trace time): the same pattern on every call for a given
          number of blocks. All heads share it (the paper's code draws per head).
Causal: the token-level j <= i half, and Q's random blocks are drawn from its past only (K < Q),
so a causal query block still gets its random blocks when the past has enough.
Padded keys are hidden as well; a query with no visible key outputs 0.
Complexity: ideal time O(L · b · (w + 2g + r) · d) per head (w, g, r in blocks). This is the
masked full-logits reference (shared `_patterns` helper): time O(L² · d), memory O(L²) per head,
which `flops` reports; in exchange it records its weights. Causal decoding may need any past
block (random ones), so the cache grows with L (state_size None).
Cross attention is not supported: the blocks need query and key positions on one axis.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from attnjax.attention._patterns import pattern_attention
from attnjax.attention.base import AttentionBase, Capabilities, dense_flops


def block_pattern(num_blocks: int, num_window_blocks: int, num_global_blocks: int,
                  num_random_blocks: int, seed: int, causal: bool) -> np.ndarray:
    """Boolean [n, n] NumPy array: query block Q may see key block K (module docstring)."""
    qb, kb = np.arange(num_blocks)[:, None], np.arange(num_blocks)[None, :]
    fixed = (np.abs(qb - kb) <= num_window_blocks // 2) | (qb < num_global_blocks)
    fixed = fixed | (kb < num_global_blocks)  # [n, n] window and global
    candidates = ~fixed & (kb < qb) if causal else ~fixed  # [n, n] where random blocks may go
    scores = np.random.default_rng(seed).random((num_blocks, num_blocks))  # same for both modes
    order = np.argsort(np.where(candidates, -scores, 1.0), axis=1, kind="stable")  # candidates 1st
    chosen = np.zeros((num_blocks, num_blocks), bool)
    np.put_along_axis(chosen, order[:, :num_random_blocks], True, axis=1)
    return fixed | (chosen & candidates)  # fewer candidates than r: all of them


class BigBird(AttentionBase):
    """Softmax attention under BigBird's block pattern (window + global + random blocks).

    Attributes:
      block_size: b >= 1 positions per block.
      num_window_blocks: odd w >= 1, blocks in the sliding window centred on the query's block;
        w >= 2 · ceil(L / b) - 1 covers the sequence (plain softmax attention).
      num_global_blocks: g >= 0, the first g blocks are global.
      num_random_blocks: r >= 0 random key blocks per query block.
      seed: fixes the random blocks.
    """

    block_size: int = 64
    num_window_blocks: int = 3
    num_global_blocks: int = 2
    num_random_blocks: int = 3
    seed: int = 0
    small_settings: ClassVar[dict] = {  # 7 blocks at L = 13: room for a random block
        "block_size": 2, "num_window_blocks": 3, "num_global_blocks": 1, "num_random_blocks": 1,
    }

    capabilities = Capabilities(cross_attention=False, attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # the reference computes every q·kᵀ

    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        if self.block_size < 1 or self.num_window_blocks < 1 or self.num_window_blocks % 2 == 0:
            raise ValueError(f"bigbird needs block_size >= 1 and an odd num_window_blocks >= 1; "
                             f"got {self.block_size}, {self.num_window_blocks}")
        if self.num_global_blocks < 0 or self.num_random_blocks < 0:
            raise ValueError("bigbird num_global_blocks and num_random_blocks must be >= 0")
        length = q.shape[1]
        blocks = block_pattern(-(-length // self.block_size), self.num_window_blocks,
                               self.num_global_blocks, self.num_random_blocks, self.seed, causal)
        block_of = jnp.arange(length) // self.block_size  # [L] block index of each position
        pattern = jnp.asarray(blocks)[block_of[:, None], block_of[None, :]]  # [L, L]
        return pattern_attention(self, q, k, v, pattern, mask=mask, causal=causal, bias=bias,
                                 deterministic=deterministic)


VARIANT = BigBird
