"""Shared driver of the recurrent mixers (gru.py, lstm.py): a masked, optionally bidirectional
scan over the sequence.

A recurrent mixer is a cell with `num_gates` gates of width H = hidden_dim (0 = d_model):
  gates_x = x W + b                     one [d_model, G·H] matmul over all positions at once;
  carry   = cell(U, carry, gates_x[t])  sequentially, U: [H, G, H] the recurrent weights;
  h_t     = carry[0]                    the hidden state is the carry's first element.
causal=True runs one forward scan; causal=False adds a backward scan with its own parameters and
sums the two directions' hidden states (so both modes have the same output width H). If H differs
from d_model the result is projected back to d_model. A padded position (mask False) leaves the
carry unchanged, in either direction, so padded inputs reach no output at a real position and a
padded sequence gives, at its real positions, what its real tokens alone give.
All arithmetic is in float32 (float64 for float64 inputs); the result is cast back to x's dtype.
The scan is the recurrent form (`recurrent_settings = {}`): with causal=True the final carry
((h,) or (h, c), each [B, H]) is sown as `intermediates/recurrent_state`.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention.base import AttentionBase, Capabilities


def gate_orthogonal(key, shape, dtype=jnp.float32):
    """[H, G, H] recurrent weights with an orthogonal H x H matrix per gate."""
    keys = jax.random.split(key, shape[1])
    square = jax.vmap(lambda k: nn.initializers.orthogonal()(k, (shape[0], shape[2]), dtype))
    return square(keys).transpose(1, 0, 2)  # [G, H, H] -> [H, G, H]


def masked_scan(cell, carry, gates_x, mask, *, reverse: bool):
    """Runs `cell` over time; returns the hidden states [B, L, H].

    cell(carry, gates_t [B, G, H]) -> carry (a tuple whose first element is h [B, H]);
    gates_x: [B, L, G, H]; mask: [B, L] bool (True = real step) or None; reverse: scan from the
    last position to the first. A padded step keeps the previous carry exactly.
    """
    if mask is None:
        mask = jnp.ones(gates_x.shape[:2], dtype=bool)  # [B, L]

    def step(carry, inputs):
        gates_t, real_t = inputs  # [B, G, H], [B]
        new = cell(carry, gates_t)
        new = tuple(jnp.where(real_t[:, None], n, c) for n, c in zip(new, carry, strict=True))
        return new, new[0]

    time_major = (jnp.swapaxes(gates_x, 0, 1), jnp.swapaxes(mask, 0, 1))  # [L, B, G, H], [L, B]
    carry, hidden = jax.lax.scan(step, carry, time_major, reverse=reverse)  # [L, B, H]
    return carry, jnp.swapaxes(hidden, 0, 1)  # [B, L, H]


class RecurrentMixer(AttentionBase):
    """Base of gru / lstm: parameters, directions, padding and the output projection.

    Subclasses set `num_gates`, `carry_size` (tensors of [B, H] in the carry), the static
    `cell(recurrent [H, G, H], carry, gates_t [B, G, H]) -> carry` and, optionally, the
    initialiser `bias_init` of the input projection's bias [G·H] (gate-major).

    Attributes:
      hidden_dim: H, the width of the hidden state; 0 = d_model.
    """

    hidden_dim: int = 0

    num_gates: ClassVar[int] = 1
    carry_size: ClassVar[int] = 1
    capabilities = Capabilities(level="mixer", cross_attention=False)
    small_settings: ClassVar[dict] = {"hidden_dim": 6}  # != d_model: exercises the projection
    recurrent_settings: ClassVar[dict] = {}  # only ever a scan

    bias_init: ClassVar = staticmethod(nn.initializers.zeros_init())

    @staticmethod
    def cell(recurrent, carry, gates_t):
        raise NotImplementedError

    # ------------------------------------------------------------------ declared costs
    def flops(self, q_len, kv_len, head_dim, causal: bool = True):
        """FLOPs for one sequence of length q_len with d_model = head_dim: per direction the
        input projection 2·L·d·G·H and the recurrence 2·L·H·G·H; causal=False runs two
        directions (the base signature carries no mode, so the default is the causal cost).
        Plus the output projection 2·L·H·d when H != d. The O(L·H) elementwise gate arithmetic
        is not counted."""
        d, hidden, g = head_dim, self.hidden_dim or head_dim, self.num_gates
        scan = 2.0 * q_len * g * hidden * (d + hidden)
        out = 2.0 * q_len * hidden * d if hidden != d else 0.0
        return scan * (1 if causal else 2) + out

    def state_size(self, head_dim):
        return self.carry_size * (self.hidden_dim or head_dim)  # per causal decoding step

    # ------------------------------------------------------------------ the layer
    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.hidden_dim < 0:
            raise ValueError(f"{type(self).__name__}: hidden_dim must be >= 0, got "
                             f"{self.hidden_dim}")
        batch, length, d_model = x.shape
        hidden, gates = self.hidden_dim or d_model, self.num_gates
        dtype = jnp.promote_types(x.dtype, jnp.float32)  # float64 inputs stay float64
        x32 = x.astype(dtype)  # [B, L, d]
        if mask is not None:
            x32 = jnp.where(mask[..., None], x32, 0.0)  # padded steps are skipped anyway

        out = jnp.zeros((batch, length, hidden), dtype)  # [B, L, H]
        for direction in ("forward",) if causal else ("forward", "backward"):
            gates_x = nn.Dense(
                gates * hidden, bias_init=self.bias_init, name=f"{direction}_input"
            )(x32).reshape(batch, length, gates, hidden)  # [B, L, G, H]
            recurrent = self.param(
                f"{direction}_recurrent", gate_orthogonal, (hidden, gates, hidden)
            )  # [H, G, H]
            carry = tuple(jnp.zeros((batch, hidden), dtype) for _ in range(self.carry_size))
            cell = lambda c, g, u=recurrent: self.cell(u, c, g)
            carry, hidden_states = masked_scan(cell, carry, gates_x, mask,
                                               reverse=direction == "backward")
            out = out + hidden_states
            if causal:  # the decoder's state: (h,) or (h, c), each [B, H]
                self.sow("intermediates", "recurrent_state", carry)
        if hidden != d_model:
            out = nn.Dense(d_model, name="output")(out)  # [B, L, d]
        return out.astype(x.dtype)
