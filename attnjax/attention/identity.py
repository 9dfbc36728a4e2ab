"""Identity mixer: no token mixing at all — the floor every mixer and attention must beat.

Reference point, not a paper: a Block whose mixing sublayer never looks at other positions,
so the model is position-wise (embedding + positional encoding + MLPs) and only the positional
encoding and the causal/padding structure of the task tell tokens apart.
Idea: out_t = x_t W + b (projection=True, the default) or out_t = x_t (projection=False).
The default keeps a learned d_model x d_model map so the floor has the sublayer's depth and
about its parameter count: it is exactly what softmax attention computes when every token may
attend only to itself (the weight on its one key is 1, leaving the value and output projections,
a product of two linear maps). projection=False adds x to the residual stream unchanged: no
parameters, 0 FLOPs.
Complexity: time O(L · d²) (projection) or O(1); memory O(L · d); decoding state 0.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention.base import AttentionBase, Capabilities


class Identity(AttentionBase):
    """x -> x W + b per position (projection=True) or x -> x; positions never interact.

    Attributes:
      projection: learn a d_model x d_model linear map with bias (True) or return x (False).
    """

    projection: bool = True

    capabilities = Capabilities(level="mixer", cross_attention=False)

    def flops(self, q_len, kv_len, head_dim):
        """With d_model = head_dim: the per-position projection 2·L·d², or 0."""
        return 2.0 * q_len * head_dim * head_dim if self.projection else 0.0

    def state_size(self, head_dim):
        return 0  # nothing is carried from one token to the next

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if not self.projection:
            return x
        out = nn.Dense(x.shape[-1], name="projection")(x.astype(jnp.float32))  # [B, L, d]
        return out.astype(x.dtype)


VARIANT = Identity
