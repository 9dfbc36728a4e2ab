"""Analytic budgets of a model: forward FLOPs per token and recurrent state size.

These are the "budget columns" of a comparison (params are counted from the parameters):
two variants can only be compared fairly at a similar cost, and these say what the cost is.

FLOPs count 2 per multiply-add, forward pass only, per input token (one sequence of the task's
length L, divided by L). A layer of the decoder-only / encoder Transformer costs
    projections   2·d·(d + 2·d_kv + d)      q, k, v, out (d_kv = kv_heads · head_dim)
    mixing        variant.flops(L, L, head_dim) · heads / L    (mixer level: flops(L, L, d) / L)
    MLP           2·2·d·mlp_dim             (0 with model.mlp_dim = 0: no MLP)
    short conv    2·w·(d + 2·d_kv)          with model.short_conv = w (mixer level: 2·w·d)
and the output head 2·d·V at each scored position (T/L of the tokens) or, for classification,
2·d·C once per sequence. The encoder–decoder adds its decoder stack (self + cross attention)
per target token, expressed per source token. Embeddings and norms are not counted.

State: the numbers a causal decoder keeps between tokens, summed over layers and heads
(`variant.state_size(head_dim)`, plus the short convolution's last w - 1 inputs of its
channels); None when it grows with the sequence (a KV cache).
"""

from __future__ import annotations

from typing import Any

from attnjax import attention


def _variant(name: str, kwargs: dict[str, Any], max_length: int):
    return attention.create(name, **dict(kwargs), max_length=max_length)


def _conv_channels(model_config, variant) -> int:
    """Channels of the self-mixing short convolution: q, k, v (or a mixer's input)."""
    d = model_config.d_model
    if variant.capabilities.level == "mixer":
        return d
    kv_heads = model_config.num_kv_heads or model_config.num_heads
    return d + 2 * kv_heads * (d // model_config.num_heads)


def _layer_flops(model_config, variant, q_len: int, kv_len: int,
                 cross: bool = False) -> tuple[float, float]:
    """(whole layer, mixing only) FLOPs of one layer over a sequence."""
    d, heads = model_config.d_model, model_config.num_heads
    head_dim = d // heads
    if variant.capabilities.level == "mixer":
        mixing = float(variant.flops(q_len, kv_len, d))
        projections = 0.0
    else:
        kv_heads = model_config.num_kv_heads or heads
        mixing = float(variant.flops(q_len, kv_len, head_dim)) * heads
        projections = 2.0 * d * (2 * d + 2 * kv_heads * head_dim) * q_len
    if not cross:  # the short convolution belongs to self mixing
        projections += 2.0 * model_config.short_conv * _conv_channels(model_config, variant) * q_len
    mlp = 4.0 * d * model_config.mlp_dim * q_len
    return projections + mixing + mlp, mixing


def budget(model_config, task, scored_per_sequence: int | None = None) -> dict[str, Any]:
    """{"flops_per_token", "attention_flops_per_token", "state_size"} of a resolved
    `config.model` on `task`. `scored_per_sequence`: positions with logits (T) for an LM."""
    length, d, layers = task.max_length, model_config.d_model, model_config.num_layers
    variant = _variant(model_config.attention, model_config.attention_kwargs, length)
    layer, mixing = _layer_flops(model_config, variant, length, length)
    total, attn = layers * layer, layers * mixing
    if task.head == "classification":
        total += 2.0 * d * task.output_size
    elif task.head == "seq2seq":
        t = task.max_target_length
        cross = _variant(model_config.cross_attention, model_config.cross_attention_kwargs,
                         max(length, t))
        dec_self, dec_mix = _layer_flops(model_config, variant, t, t)
        dec_cross, cross_mix = _layer_flops(model_config, cross, t, length, cross=True)
        total += layers * (dec_self + dec_cross) + 2.0 * d * task.output_size * t
        attn += layers * (dec_mix + cross_mix)
    else:
        scored = length if scored_per_sequence is None else scored_per_sequence
        total += 2.0 * d * task.output_size * scored
    heads = 1 if variant.capabilities.level == "mixer" else model_config.num_heads
    head_dim = d if variant.capabilities.level == "mixer" else d // model_config.num_heads
    per_head = variant.state_size(head_dim)
    conv = max(model_config.short_conv - 1, 0) * _conv_channels(model_config, variant)
    state = None if per_head is None else (int(per_head) * heads + conv) * layers
    return {
        "flops_per_token": total / length,
        "attention_flops_per_token": attn / length,
        "state_size": state,
    }
