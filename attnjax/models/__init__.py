"""Backbones and heads. `build(model_config, task)` makes the model a config describes:
a decoder-only Transformer for "lm" tasks, an encoder with a pooled classifier for
"classification" tasks, and an encoder–decoder for "seq2seq" tasks."""

from __future__ import annotations

from attnjax import hardware
from attnjax.models.encoder_decoder import EncoderDecoder
from attnjax.models.transformer import DTYPES, Block, MixingSublayer, Stack, Transformer

__all__ = ["Block", "EncoderDecoder", "MixingSublayer", "Stack", "Transformer", "build"]

# the keys of a task batch that are model inputs (besides "inputs"); the rest are labels
INPUT_KEYS = ("padding_mask", "positions", "decoder_inputs", "decoder_padding_mask")


def _pairs(config_dict) -> tuple:
    return tuple(sorted(config_dict.to_dict().items()))


def block_settings(model_config) -> tuple:
    """The Block settings a resolved `config.model` describes, as hashable pairs."""
    return (
        ("d_model", model_config.d_model),
        ("num_heads", model_config.num_heads),
        ("mlp_dim", model_config.mlp_dim),
        ("attention", model_config.attention),
        ("attention_kwargs", _pairs(model_config.attention_kwargs)),
        ("num_kv_heads", model_config.num_kv_heads),
        ("qk_norm", model_config.qk_norm),
        ("logit_soft_cap", model_config.logit_soft_cap),
        ("attention_dropout_rate", model_config.attention_dropout_rate),
        ("short_conv", model_config.short_conv),
    )


def build(model_config, task):
    """The model for a resolved `config.model` and a task instance. `model.dtype="auto"` is
    resolved here, for the backend this process runs on (hardware.compute_dtype)."""
    common = dict(
        vocab_size=task.vocab_size, output_size=task.output_size, max_length=task.max_length,
        block=block_settings(model_config), num_layers=model_config.num_layers,
        positional=model_config.positional, dropout_rate=model_config.dropout_rate,
        dtype=DTYPES[hardware.compute_dtype(model_config.dtype)],
        remat=model_config.remat, scan_layers=model_config.scan_layers,
    )
    if task.head == "seq2seq":
        return EncoderDecoder(
            **common, max_target_length=task.max_target_length,
            cross_attention=model_config.cross_attention,
            cross_attention_kwargs=_pairs(model_config.cross_attention_kwargs),
        )
    return Transformer(**common, head=task.head, causal=task.causal)
