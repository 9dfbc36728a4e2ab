"""Talking-heads attention: learned mixing across heads before and after the softmax.

Paper: Shazeer et al. 2020, "Talking-Heads Attention" (arXiv:2003.02436).
Idea: logits s_h = q_h·k_hᵀ/√d per head h; mixed logits s'_g = Σ_h P_l[h, g] s_h; weights
w_g = softmax(s'_g) per mixed head; mixed weights w'_f = Σ_g P_w[g, f] w_g; out_f = w'_f · v_f.
P_l and P_w are learned [H, H] matrices initialised to the identity (plain softmax attention at
init). The paper allows different head counts for logits, softmax and values; here all are H.
Bias (ALiBi, T5), soft-capping, the padding/causal mask and attention dropout act on the mixed
logits / softmax weights, i.e. after the pre-softmax mixing, so masking stays exact: a hidden
key has an exact zero weight in every softmax head and so in every mixed head. The recorded
weights are the softmax weights w (before the post-softmax mixing, which can make them signed).
Complexity: time O(Lq · Lk · (d + H)) and memory O(Lq · Lk) per head. `flops` reports the
dense attention part only: the two mixings add 4 · H · Lq · Lk per head, and flops() is not
told the number of heads H.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention.base import (
    AttentionBase,
    Capabilities,
    combine_masks,
    dense_flops,
    scaled_dot_logits,
    weighted_values,
)


def _identity(key, shape, dtype=jnp.float32):
    del key
    return jnp.eye(shape[0], shape[1], dtype=dtype)


class TalkingHeads(AttentionBase):
    """Softmax attention with learned [H, H] head mixing of the logits and of the weights."""

    capabilities = Capabilities(attention_weights=True, logits=True)

    def flops(self, q_len, kv_len, head_dim):
        return dense_flops(q_len, kv_len, head_dim)  # + 4 · H · Lq · Lk (H unknown here)

    @nn.compact
    def __call__(self, q, k, v, *, mask=None, causal=False, bias=None, deterministic=True):
        self.check_call(q, k, v, mask, causal, bias)
        heads = q.shape[2]
        logits_mix = self.param("logits_mix", _identity, (heads, heads))  # P_l [H, H]
        weights_mix = self.param("weights_mix", _identity, (heads, heads))  # P_w [H, H]
        logits = jnp.einsum("bhqk,hg->bgqk", scaled_dot_logits(q, k), logits_mix)  # [B,H,Lq,Lk]
        weights = self.attention_weights(
            logits, combine_masks(mask, causal, q.shape[1], k.shape[1]), bias=bias,
            deterministic=deterministic,
        )  # [B, H, Lq, Lk] float32, exact zeros at hidden keys
        weights = jnp.einsum("bgqk,gf->bfqk", weights, weights_mix)  # [B, H, Lq, Lk]
        return weighted_values(weights, v).astype(q.dtype)  # [B, Lq, H, D]


VARIANT = TalkingHeads
