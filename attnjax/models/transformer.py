"""The one backbone: a pre-norm Transformer whose Block owns everything but the token mixing.

Block: x + Out(Attn(Q(LN x), K(LN x), V(LN x))) then x + MLP(LN x). The attention variant
(`attnjax.attention.<name>`) only sees projected q, k, v [B, L, H, Dh], so comparing variants
compares token mixing and nothing else. Heads: "lm" (logits per predicted position; with
`positions` only those positions are projected to the vocabulary) and "classification"
(masked mean pooling, then logits per sequence).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attnjax import attention as attention_lib
from attnjax.models.positional import AddPositional

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class Block(nn.Module):
    """One pre-norm layer: token mixing by the configured variant, then an MLP."""

    d_model: int
    num_heads: int
    mlp_dim: int
    attention: str
    attention_kwargs: tuple[tuple[str, Any], ...] = ()
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, padding_mask=None, causal=False, deterministic=True):
        # x: [B, L, D]
        head_dim = self.d_model // self.num_heads
        dense = lambda name: nn.DenseGeneral(
            (self.num_heads, head_dim), dtype=self.dtype, name=name
        )
        h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
        q, k, v = dense("query")(h), dense("key")(h), dense("value")(h)  # [B, L, H, Dh]
        settings = attention_lib.check_options(self.attention, dict(self.attention_kwargs))
        mixer = attention_lib.get(self.attention)(**settings, name="attention")
        h = mixer(q, k, v, mask=padding_mask, causal=causal, deterministic=deterministic)
        h = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype, name="out")(h)
        x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)  # [B, L, D]

        h = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(h)  # [B, L, F]
        h = nn.gelu(h)
        h = nn.Dense(self.d_model, dtype=self.dtype, name="mlp_out")(h)  # [B, L, D]
        return x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class Transformer(nn.Module):
    """Embedding + positional encoding + `num_layers` Blocks + final norm + head."""

    vocab_size: int
    output_size: int
    max_length: int
    head: str = "lm"  # "lm" | "classification"
    causal: bool = True
    num_layers: int = 2
    d_model: int = 64
    num_heads: int = 2
    mlp_dim: int = 256
    attention: str = "softmax"
    attention_kwargs: tuple[tuple[str, Any], ...] = ()
    dropout_rate: float = 0.0
    positional: str = "learned"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs, *, padding_mask=None, positions=None, deterministic=True):
        # inputs: [B, L] int; padding_mask: [B, L] bool or None; positions: [B, T] int or None
        x = nn.Embed(self.vocab_size, self.d_model, name="embed")(inputs)  # [B, L, D]
        x = AddPositional(self.positional, self.max_length, name="positional")(x)
        x = nn.Dropout(self.dropout_rate)(x.astype(self.dtype), deterministic=deterministic)
        for i in range(self.num_layers):
            x = Block(
                d_model=self.d_model,
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                attention=self.attention,
                attention_kwargs=self.attention_kwargs,
                dropout_rate=self.dropout_rate,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, padding_mask=padding_mask, causal=self.causal, deterministic=deterministic)
        x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)  # [B, L, D]
        if self.head == "lm":
            if positions is not None:  # only where a loss is taken: [B, T, D]
                x = jnp.take_along_axis(x, positions[..., None], axis=1)
            return nn.Dense(self.output_size, dtype=jnp.float32, name="lm_head")(x)  # [B, T, V]
        if self.head == "classification":
            if padding_mask is None:
                pooled = jnp.mean(x, axis=1)  # [B, D]
            else:
                m = padding_mask[..., None].astype(x.dtype)  # [B, L, 1]
                pooled = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
            return nn.Dense(self.output_size, dtype=jnp.float32, name="classifier")(pooled)
        raise ValueError(f"unknown head {self.head!r}; known: lm, classification")


def build(model_config, task) -> Transformer:
    """The Transformer for a resolved `config.model` and a task instance."""
    return Transformer(
        vocab_size=task.vocab_size,
        output_size=task.output_size,
        max_length=task.max_length,
        head=task.head,
        causal=task.causal,
        num_layers=model_config.num_layers,
        d_model=model_config.d_model,
        num_heads=model_config.num_heads,
        mlp_dim=model_config.mlp_dim,
        attention=model_config.attention,
        attention_kwargs=tuple(sorted(model_config.attention_kwargs.to_dict().items())),
        dropout_rate=model_config.dropout_rate,
        positional=model_config.positional,
        dtype=_DTYPES[model_config.dtype],
    )
