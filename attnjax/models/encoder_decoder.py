"""Encoder–decoder (Vaswani et al. 2017) for sequence-to-sequence tasks.

Encoder: bidirectional Stack over the source. Decoder: causal Stack over the shifted target
whose Blocks add a cross-attention sublayer; any variant that declares cross-attention support
can serve as the cross attention (`model.cross_attention`), independently of the self-attention
variant (`model.attention`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from attnjax.models.transformer import Stack, lm_logits


class EncoderDecoder(nn.Module):
    vocab_size: int
    output_size: int
    max_length: int  # of the source
    max_target_length: int
    block: tuple[tuple[str, Any], ...]  # Block settings (self-attention variant etc.)
    cross_attention: str = "softmax"
    cross_attention_kwargs: tuple[tuple[str, Any], ...] = ()
    num_layers: int = 2
    num_decoder_layers: int = 0  # 0 = num_layers
    positional: str = "learned"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(self, inputs, *, decoder_inputs, padding_mask=None, decoder_padding_mask=None,
                 positions=None, deterministic=True):
        # inputs: [B, Ls] source ids; decoder_inputs: [B, Lt] shifted target ids
        common = dict(positional=self.positional, dropout_rate=self.dropout_rate,
                      dtype=self.dtype, remat=self.remat, scan_layers=self.scan_layers)
        memory = Stack(self.vocab_size, self.max_length, False, self.block, self.num_layers,
                       **common, name="encoder")(
            inputs, padding_mask=padding_mask, deterministic=deterministic)  # [B, Ls, D]
        decoder_block = (*self.block, ("cross_attention", self.cross_attention),
                         ("cross_attention_kwargs", self.cross_attention_kwargs))
        x = Stack(self.output_size, self.max_target_length, True, decoder_block,
                  self.num_decoder_layers or self.num_layers, **common, name="decoder")(
            decoder_inputs, padding_mask=decoder_padding_mask, context=memory,
            context_mask=padding_mask, deterministic=deterministic)  # [B, Lt, D]
        return lm_logits(x.astype(jnp.float32), positions, self.output_size)  # [B, T, V]
