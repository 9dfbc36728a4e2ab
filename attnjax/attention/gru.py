"""GRU mixer: a gated recurrent unit scanned over the sequence in place of attention.

Paper: Cho et al. 2014, "Learning Phrase Representations using RNN Encoder-Decoder for
Statistical Machine Translation" (arXiv:1406.1078), the hidden unit of its section 2.3.
Idea: a recurrent state h gated by a reset gate r and an update gate z (σ = sigmoid):
  r_t = σ(W_r x_t + U_r h_{t-1} + b_r),   z_t = σ(W_z x_t + U_z h_{t-1} + b_z),
  h̃_t = tanh(W x_t + U (r_t ⊙ h_{t-1}) + b),   h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ h̃_t.
This is the paper's form: the reset gate multiplies h before U (cuDNN's and flax's GRUCell
apply it after U instead). causal=True: one forward scan; causal=False: a forward and a backward
scan with separate weights, their hidden states summed; then a projection H -> d_model when
hidden_dim != d_model (see `_rnn.py`). Padded steps leave the state unchanged.
Complexity (H = hidden_dim, d = d_model): time O(L · H · (d + H)) per direction, sequential in L
(no parallelism over the sequence); memory O(L · H) for the outputs (and the backward pass);
decoding state H.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnjax.attention._rnn import RecurrentMixer


class GRU(RecurrentMixer):
    """Cho et al.'s GRU over the sequence; gates (r, z, candidate) in that order.

    Attributes:
      hidden_dim: H, the state width; 0 = d_model (no output projection).
    """

    num_gates = 3
    carry_size = 1

    @staticmethod
    def cell(recurrent, carry, gates_t):
        # recurrent: [H, 3, H]; carry: (h [B, H],); gates_t: [B, 3, H] = W x_t + b per gate
        (h,) = carry
        rz = jax.nn.sigmoid(gates_t[:, :2] + jnp.einsum("bh,hgk->bgk", h, recurrent[:, :2]))
        r, z = rz[:, 0], rz[:, 1]  # [B, H] each
        candidate = jnp.tanh(gates_t[:, 2] + (r * h) @ recurrent[:, 2])  # [B, H]
        return (z * h + (1.0 - z) * candidate,)


VARIANT = GRU
