"""The backbone: a pre-norm Transformer whose Block owns everything but the token mixing.

Block: x + Out(Attn(Q(LN x), K(LN x), V(LN x))) [+ x + Out(CrossAttn(LN x, context))]
then x + MLP(LN x) (no MLP and no second norm when `mlp_dim` = 0, as in Zoology's mixer-only
models). The attention variant (`attnjax.attention.<name>`) only sees projected
q, k, v [B, L, H, Dh], so comparing variants compares token mixing and nothing else; a
mixer-level variant (GRU, LSTM, ...) replaces the whole mixing sublayer. Heads: "lm" (logits per
predicted position; with `positions` only those positions are projected to the vocabulary) and
"classification" (masked mean pooling, then logits per sequence).

Precision: `dtype` is the compute dtype of the Blocks (bfloat16 on accelerators by default);
parameters are float32 whatever it is, LayerNorm statistics and the variants' softmax run in
float32, and the heads take float32 inputs and return float32 logits, so losses and metrics
are float32 sums. Memory: `remat` recomputes each Block's activations in the backward pass
(jax.checkpoint); `scan_layers` runs one Block under `nn.scan` over the layers, its parameters
stacked on a leading layer axis ("layers" instead of "block_0", "block_1", ...), so the program
holds one Block however deep the model is.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attnjax import attention as attention_lib
from attnjax.attention import _longconv
from attnjax.models import positional as pos_lib

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MixingSublayer(nn.Module):
    """Token mixing with the configured variant: projections, QK-norm, RoPE, the variant, out.

    `context` (cross attention) gives keys/values from another sequence; `bias` is an additive
    logits bias [1|B, H, Lq, Lk] (ALiBi/T5); `rope` rotates q and k (self-attention only).
    `short_conv` = w > 0 (self mixing only) convolves q, k and v after their projections, or a
    mixer-level variant's input x, with w taps per channel (depthwise, no bias) over the
    sequence: causal (lags 0..w-1) when `causal`, else centred (lags -(w // 2)..w-1-w // 2).
    Padded positions are zeroed before the convolution, so they reach no real position.
    """

    d_model: int
    num_heads: int
    attention: str
    attention_kwargs: tuple[tuple[str, Any], ...] = ()
    num_kv_heads: int = 0  # 0 = num_heads (MHA); 1 = MQA; a divisor of num_heads = GQA
    qk_norm: bool = False
    rope: bool = False
    logit_soft_cap: float = 0.0
    attention_dropout_rate: float = 0.0
    max_length: int = 0
    short_conv: int = 0  # w > 0: depthwise conv of width w on q, k, v (mixers: on x)
    dtype: Any = jnp.float32

    def _short_conv(self, name, x, padding_mask, causal):
        """x [B, L, ...] -> depthwise conv with `short_conv` taps per channel [w, ...]."""
        width = self.short_conv
        taps = self.param(name, nn.initializers.normal(width**-0.5), (width, *x.shape[2:]))
        x = _longconv.zero_padded(x, padding_mask)
        return _longconv.short_conv(x, taps.astype(x.dtype), causal=causal)

    @nn.compact
    def __call__(self, x, *, context=None, padding_mask=None, causal=False, bias=None,
                 deterministic=True):
        # x: [B, Lq, D]; context: [B, Lk, D] or None; padding_mask: [B, Lk] bool or None
        cls = attention_lib.get(self.attention)
        settings = attention_lib.check_options(self.attention, dict(self.attention_kwargs))
        block_options = dict(logit_soft_cap=self.logit_soft_cap, max_length=self.max_length,
                             attention_dropout_rate=self.attention_dropout_rate)
        variant = cls(**settings, **block_options, name="attention")
        if self.short_conv < 0 or (self.short_conv and context is not None):
            raise ValueError(f"short_conv={self.short_conv}: a width >= 0, for self mixing only")
        if cls.capabilities.level == "mixer":
            if self.short_conv:
                x = self._short_conv("input_conv", x, padding_mask, causal)  # [B, L, D]
            return variant(x, mask=padding_mask, causal=causal, deterministic=deterministic)
        head_dim = self.d_model // self.num_heads
        kv_heads = self.num_kv_heads or self.num_heads
        proj = lambda heads, name: nn.DenseGeneral((heads, head_dim), dtype=self.dtype,
                                                   name=name)
        source = x if context is None else context
        q = proj(self.num_heads, "query")(x)  # [B, Lq, H, Dh]
        k = proj(kv_heads, "key")(source)  # [B, Lk, Hkv, Dh]
        v = proj(kv_heads, "value")(source)  # [B, Lk, Hkv, Dh]
        if self.short_conv:  # self mixing: q, k, v share the sequence and its padding mask
            q, k, v = (self._short_conv(f"{name}_conv", z, padding_mask, causal)
                       for name, z in (("query", q), ("key", k), ("value", v)))
        if self.qk_norm:  # Henry et al. 2020 / Dehghani et al. 2023: normalise per head
            q = nn.LayerNorm(use_bias=False, dtype=self.dtype, name="query_norm")(q)
            k = nn.LayerNorm(use_bias=False, dtype=self.dtype, name="key_norm")(k)
        if self.rope:
            q, k = pos_lib.apply_rope(q), pos_lib.apply_rope(k)
        h = variant(q, k, v, mask=padding_mask, causal=causal, bias=bias,
                    deterministic=deterministic)  # [B, Lq, H, Dh]
        return nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype, name="out")(h)


class Block(nn.Module):
    """One pre-norm layer: self mixing, optional cross attention to `context`, then an MLP
    (none when `mlp_dim` = 0: the layer is its mixing sublayer(s) alone)."""

    d_model: int
    num_heads: int
    mlp_dim: int  # hidden width of the MLP; 0 = no MLP sublayer (and no norm before it)
    attention: str
    attention_kwargs: tuple[tuple[str, Any], ...] = ()
    cross_attention: str | None = None  # a variant name: adds a cross-attention sublayer
    cross_attention_kwargs: tuple[tuple[str, Any], ...] = ()
    num_kv_heads: int = 0
    qk_norm: bool = False
    rope: bool = False
    logit_soft_cap: float = 0.0
    attention_dropout_rate: float = 0.0
    dropout_rate: float = 0.0
    max_length: int = 0
    short_conv: int = 0  # the self-mixing sublayer's short convolution (MixingSublayer)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, padding_mask=None, causal=False, bias=None, context=None,
                 context_mask=None, deterministic=True):
        # x: [B, L, D]. Positional too (LAYER_STATIC: which arguments remat/scan keep static)
        drop = lambda h: nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        shared = dict(d_model=self.d_model, num_heads=self.num_heads,
                      num_kv_heads=self.num_kv_heads, qk_norm=self.qk_norm,
                      logit_soft_cap=self.logit_soft_cap, max_length=self.max_length,
                      attention_dropout_rate=self.attention_dropout_rate, dtype=self.dtype)
        h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
        h = MixingSublayer(attention=self.attention, attention_kwargs=self.attention_kwargs,
                           rope=self.rope, short_conv=self.short_conv, **shared, name="mixing")(
            h, padding_mask=padding_mask, causal=causal, bias=bias, deterministic=deterministic)
        x = x + drop(h)  # [B, L, D]
        if self.cross_attention is not None:
            h = nn.LayerNorm(dtype=self.dtype, name="cross_norm")(x)
            h = MixingSublayer(attention=self.cross_attention,
                               attention_kwargs=self.cross_attention_kwargs, **shared,
                               name="cross")(h, context=context, padding_mask=context_mask,
                                             deterministic=deterministic)
            x = x + drop(h)
        if self.mlp_dim == 0:
            return x
        h = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        h = nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(h)  # [B, L, F]
        h = nn.gelu(h)
        h = nn.Dense(self.d_model, dtype=self.dtype, name="mlp_out")(h)  # [B, L, D]
        return x + drop(h)


# Block.__call__'s Python-valued arguments (causal, deterministic), counting self as 0: static
# under nn.remat, which would otherwise trace them.
LAYER_STATIC = (3, 7)


class Stack(nn.Module):
    """Embedding + absolute positions + `num_layers` Blocks + final norm: [B, L] -> [B, L, D].

    Relative positions (rope / alibi / t5_bias) are applied inside every Block.
    """

    vocab_size: int
    max_length: int
    causal: bool
    block: tuple[tuple[str, Any], ...]  # Block settings shared by every layer, as pairs
    num_layers: int = 2
    positional: str = "learned"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False  # recompute each Block's activations in the backward pass
    scan_layers: bool = False  # one Block scanned over the layers (params [num_layers, ...])

    @nn.compact
    def __call__(self, tokens, *, padding_mask=None, context=None, context_mask=None,
                 deterministic=True):
        block = dict(self.block)
        x = nn.Embed(self.vocab_size, block["d_model"], name="embed")(tokens)  # [B, L, D]
        x = pos_lib.AddPositional(self.positional, self.max_length, name="positional")(x)
        x = nn.Dropout(self.dropout_rate)(x.astype(self.dtype), deterministic=deterministic)
        length = tokens.shape[1]
        bias = None
        if self.positional == "alibi":
            bias = pos_lib.alibi_bias(block["num_heads"], length, length)
        elif self.positional == "t5_bias":
            bias = pos_lib.T5Bias(block["num_heads"], bidirectional=not self.causal,
                                  name="t5_bias")(length, length)
        settings = dict(**block, rope=self.positional == "rope", dropout_rate=self.dropout_rate,
                        max_length=self.max_length, dtype=self.dtype)
        # inside a scan the CSE that remat's prevent_cse guards against cannot happen
        layer = nn.remat(Block, static_argnums=LAYER_STATIC, prevent_cse=not self.scan_layers
                         ) if self.remat else Block
        inputs = (padding_mask, self.causal, bias, context, context_mask, deterministic)
        if self.scan_layers:
            causal = self.causal

            def body(block, x, padding_mask, bias, context, context_mask):
                return block(x, padding_mask, causal, bias, context, context_mask,
                             deterministic), None

            scan = nn.scan(body, variable_axes={"params": 0, "intermediates": 0},
                           split_rngs={"params": True, "dropout": True}, in_axes=nn.broadcast,
                           length=self.num_layers)
            x, _ = scan(layer(**settings, name="layers"), x, padding_mask, bias, context,
                        context_mask)  # [B, L, D]
        else:
            for i in range(self.num_layers):
                x = layer(**settings, name=f"block_{i}")(x, *inputs)  # [B, L, D]
        return nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)  # [B, L, D]


def lm_logits(x, positions, output_size: int, name: str = "lm_head"):
    """x [B, L, D] -> logits [B, T, V] at `positions` [B, T] (all L positions when None)."""
    if positions is not None:  # only where a loss is taken
        x = jnp.take_along_axis(x, positions[..., None], axis=1)  # [B, T, D]
    return nn.Dense(output_size, dtype=jnp.float32, name=name)(x)


class Transformer(nn.Module):
    """Encoder-only (classification) or decoder-only (lm) model over one token sequence."""

    vocab_size: int
    output_size: int
    max_length: int
    block: tuple[tuple[str, Any], ...]
    head: str = "lm"  # "lm" | "classification"
    causal: bool = True
    num_layers: int = 2
    positional: str = "learned"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(self, inputs, *, padding_mask=None, positions=None, deterministic=True):
        # inputs: [B, L] int; padding_mask: [B, L] bool or None; positions: [B, T] int or None
        x = Stack(self.vocab_size, self.max_length, self.causal, self.block, self.num_layers,
                  self.positional, self.dropout_rate, self.dtype, self.remat, self.scan_layers,
                  name="stack")(
            inputs, padding_mask=padding_mask, deterministic=deterministic)  # [B, L, D]
        x = x.astype(jnp.float32)  # heads, pooling and losses in float32
        if self.head == "lm":
            return lm_logits(x, positions, self.output_size)  # [B, T, V]
        if self.head == "classification":
            if padding_mask is None:
                pooled = jnp.mean(x, axis=1)  # [B, D]
            else:
                m = padding_mask[..., None].astype(x.dtype)  # [B, L, 1]
                pooled = jnp.sum(x * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
            return nn.Dense(self.output_size, dtype=jnp.float32, name="classifier")(pooled)
        raise ValueError(f"unknown head {self.head!r}; known: lm, classification")
