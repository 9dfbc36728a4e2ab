"""MLP-Mixer token mixing: an MLP along the sequence axis, shared across channels.

Paper: Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision"
(arXiv:2105.01601), the token-mixing MLP; its causal form uses the masks of MADE (Germain et al.
2015, "MADE: Masked Autoencoder for Distribution Estimation", arXiv:1502.03509).
Idea: for every channel c, the column x[:, c] (one value per position) goes through an MLP over
positions:  out[t, c] = Σ_f W2[f, t] · gelu(Σ_s W1[s, f] · x[s, c] + b1[f]) + b2[t],
W1: [max_length, F], W2: [F, max_length], F = token_mlp_dim. The weights are tied to absolute
positions, so lengths up to max_length are accepted and a shorter input of length L uses the
top-left slices W1[:L], W2[:, :L], b2[:L]. The channel-mixing MLP of a Mixer layer is the
Block's own MLP; the Block also supplies the layer norm and the residual.
Padding: padded positions are set to 0 before mixing (their weights still shape real outputs
through the position they occupy, so left padding shifts which weights a token meets).
Causal (MADE masks): hidden unit f gets a degree m(f) = ⌊f · max_length / F⌋; it reads the
inputs s <= m(f) and feeds the outputs t >= m(f), so output t depends on inputs s <= t only. A
plain lower-triangular mask on W1 and W2 would leak (t <- f <- s with s > t through the hidden
layer); the degrees rule that out while keeping the hidden layer. Masked weights are exact
zeros, and bidirectional and causal modes share the same parameters.
Complexity: time O(L · F · d) (dense even when causal: half the weights are masked zeros);
parameters O(max_length · F); memory O(F · d) per sequence beyond the input. Causal decoding
keeps F · d numbers: for each hidden unit, its running pre-activation (m(f) >= t) or its final
activation (m(f) < t).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention.base import AttentionBase, Capabilities


def made_masks(length: int, max_length: int, hidden: int):
    """Causal masks ([L, F] for W1, [F, L] for W2): s <= m(f) and m(f) <= t, m(f) = ⌊f·M/F⌋."""
    degree = jnp.arange(hidden) * max_length // hidden  # [F] in [0, max_length)
    pos = jnp.arange(length)  # [L]
    return pos[:, None] <= degree[None, :], degree[:, None] <= pos[None, :]


class MLPMixer(AttentionBase):
    """Token-mixing MLP of MLP-Mixer over positions, shared by all channels.

    Attributes:
      token_mlp_dim: F, the hidden width of the token-mixing MLP (D_S in the paper).
    """

    token_mlp_dim: int = 256
    small_settings: ClassVar[dict] = {"token_mlp_dim": 8}  # F < L: several positions per unit

    capabilities = Capabilities(level="mixer", cross_attention=False, needs_max_length=True)

    def flops(self, q_len, kv_len, head_dim):
        """With d_model = head_dim: two [L x F] products per channel, 4·L·F·d (either mode)."""
        return 4.0 * q_len * self.token_mlp_dim * head_dim

    def state_size(self, head_dim):
        return self.token_mlp_dim * head_dim  # per hidden unit and channel (module docstring)

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.token_mlp_dim < 1:
            raise ValueError(f"mlp_mixer token_mlp_dim must be >= 1, got {self.token_mlp_dim}")
        length, hidden, max_length = x.shape[1], self.token_mlp_dim, self.max_length
        w1 = self.param("token_in", nn.initializers.lecun_normal(), (max_length, hidden))
        b1 = self.param("token_in_bias", nn.initializers.zeros_init(), (hidden,))
        w2 = self.param("token_out", nn.initializers.lecun_normal(), (hidden, max_length))
        b2 = self.param("token_out_bias", nn.initializers.zeros_init(), (max_length,))
        w1, w2, b2 = w1[:length], w2[:, :length], b2[:length]  # [L, F], [F, L], [L]
        if causal:
            read, feed = made_masks(length, max_length, hidden)
            w1, w2 = jnp.where(read, w1, 0.0), jnp.where(feed, w2, 0.0)

        x32 = x.astype(jnp.float32)  # [B, L, d]
        if mask is not None:
            x32 = jnp.where(mask[..., None], x32, 0.0)
        h = nn.gelu(jnp.einsum("bsc,sf->bfc", x32, w1) + b1[:, None])  # [B, F, d]
        out = jnp.einsum("bfc,ft->btc", h, w2) + b2[:, None]  # [B, L, d]
        return out.astype(x.dtype)


VARIANT = MLPMixer
