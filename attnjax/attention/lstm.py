"""LSTM mixer: a long short-term memory cell scanned over the sequence in place of attention.

Papers: Hochreiter & Schmidhuber 1997, "Long Short-Term Memory" (Neural Computation 9(8)), with
the forget gate of Gers, Schmidhuber & Cummins 2000, "Learning to Forget: Continual Prediction
with LSTM" — the standard modern cell, without peephole connections.
Idea: a memory cell c written through input gate i, kept through forget gate f, read through
output gate o (σ = sigmoid):
  i, f, o = σ(W_{i,f,o} x_t + U_{i,f,o} h_{t-1} + b_{i,f,o}),
  g = tanh(W_g x_t + U_g h_{t-1} + b_g),
  c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t).
The forget-gate bias starts at 1 (Jozefowicz et al. 2015), the other biases at 0. causal=True:
one forward scan; causal=False: a forward and a backward scan with separate weights, their
hidden states h summed; then a projection H -> d_model when hidden_dim != d_model (see
`_rnn.py`). Padded steps leave (h, c) unchanged.
Complexity (H = hidden_dim, d = d_model): time O(L · H · (d + H)) per direction, sequential in L;
memory O(L · H); decoding state (h, c) = 2H.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnjax.attention._rnn import RecurrentMixer


def forget_bias_one(key, shape, dtype=jnp.float32):
    """Input-projection bias [4H], gates (i, f, g, o): 1 for the forget gate, else 0."""
    hidden = shape[0] // 4
    return jnp.zeros(shape, dtype).at[hidden : 2 * hidden].set(1.0)


class LSTM(RecurrentMixer):
    """LSTM (with forget gate) over the sequence; gates (i, f, g, o) in that order.

    Attributes:
      hidden_dim: H, the width of h and c; 0 = d_model (no output projection).
    """

    num_gates = 4
    carry_size = 2
    bias_init = staticmethod(forget_bias_one)

    @staticmethod
    def cell(recurrent, carry, gates_t):
        # recurrent: [H, 4, H]; carry: (h, c) [B, H] each; gates_t: [B, 4, H] = W x_t + b
        h, c = carry
        pre = gates_t + jnp.einsum("bh,hgk->bgk", h, recurrent)  # [B, 4, H]
        i, f, o = (jax.nn.sigmoid(pre[:, j]) for j in (0, 1, 3))  # [B, H] each
        c = f * c + i * jnp.tanh(pre[:, 2])  # [B, H]
        return (o * jnp.tanh(c), c)


VARIANT = LSTM
