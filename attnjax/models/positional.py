"""Absolute positional encodings added to token embeddings.

sinusoidal: Vaswani et al. 2017 (fixed sin/cos of geometric frequencies).
learned:    a trainable [max_length, d_model] table (GPT-2 / BERT style).
none:       nothing added; the mixer must find order on its own (causal masks do leak order).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def sinusoidal_table(length: int, d_model: int) -> np.ndarray:
    """[length, d_model] float32: sin on even channels, cos on odd ones."""
    pos = np.arange(length, dtype=np.float64)[:, None]  # [L, 1]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float64) * (-np.log(10_000.0) / d_model))
    table = np.zeros((length, d_model), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * div)
    table[:, 1::2] = np.cos(pos * div[: d_model // 2])
    return table.astype(np.float32)


class AddPositional(nn.Module):
    """x [B, L, D] -> x + P[:L] for the chosen kind."""

    kind: str
    max_length: int

    @nn.compact
    def __call__(self, x):
        length, d_model = x.shape[1], x.shape[2]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        if self.kind == "none":
            return x
        if self.kind == "sinusoidal":
            table = jnp.asarray(sinusoidal_table(length, d_model))
        elif self.kind == "learned":
            table = self.param(
                "embedding", nn.initializers.normal(0.02), (self.max_length, d_model)
            )[:length]
        else:
            raise ValueError(f"unknown positional encoding {self.kind!r}")
        return x + table[None].astype(x.dtype)  # [B, L, D]
