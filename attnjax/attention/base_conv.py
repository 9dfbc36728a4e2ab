"""BaseConv: a gated convolution, the simplest mixer of the Zoology study.

Paper: Arora, Eyuboglu, Timalsina, Johnson, Poli, Zou, Rudra, Ré 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models" (arXiv:2312.04927), its BaseConv;
the layer as in zoology's mixers/base_conv.py and mixers/convolution.py.
Idea: y = (x W + b) ⊙ conv(x) + x: a linear projection gates a depthwise causal convolution of
the input (no projection before the convolution; the input skip "+ x" is zoology's). Here
    conv(x) = L(S(x)),   S(u) = Σ_{i<w} s_i ⊙ u_{t-i} + c     (short conv, width w = short_width,
                                                               with bias; identity when w = 0)
                         L(u) = h * u + u                      (long conv with an implicit filter
                                                               h, as Hyena's, plus zoology's skip;
                                                               identity when long_conv=False)
Zoology builds a BaseConv model by alternating layers: its figure 2 uses kernel sizes [3, -1]
for its two layers, a short conv of width 3 then a long implicit one. A Block option is the same
in every layer here, so each layer composes both (S then L); `long_conv=False` gives the short
layer alone and `short_width=0` the long one alone.
Complexity (d = d_model): time O(L · d² + L · w · d + d · L log L) (the long conv by FFT of size
n >= 2L - 1, its filter an FFN at L lags), memory O(L · d).
State: with the long conv, every output reads the whole history (state_size None, no recurrent
form). With long_conv=False the layer is a width-w convolution: a decoder keeps the last w - 1
inputs, state_size (w - 1) · d, and mode='recurrent' runs it token by token and sows
"recurrent_state" = that buffer [B, w-1, d]. (recurrent_settings stays None: the default layer
has no fixed-size recurrence, and a class-level setting cannot depend on long_conv.)
Causal only (causal=False raises). Padding: the inputs of both convolutions are zeroed at padded
positions, so a padded token adds nothing to the real ones.
Deviations: zoology's implicit filter has its own learning rate; here it gets the run's.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention import _longconv as lc
from attnjax.attention._recurrence import scan_sequence
from attnjax.attention.base import AttentionBase, Capabilities

MODES = ("conv", "recurrent")


class BaseConv(AttentionBase):
    """(x W + b) ⊙ L(S(x)) + x with a short conv S and an implicit long conv L.

    Attributes:
      mode: 'conv' (training form) or 'recurrent' (token scan; only with long_conv=False).
      short_width: w, the width of the short causal conv (0 = none).
      long_conv: add the implicit long convolution (zoology's kernel_size=-1 layer).
      filter_width: hidden width of the implicit filter's FFN (zoology: 16).
      filter_emb_dim: size of its positional features (odd).
      filter_horizon: T, the length unit of the filter's lags; 0 = the model's max_length.
    """

    mode: str = "conv"
    short_width: int = 3
    long_conv: bool = True
    filter_width: int = 16
    filter_emb_dim: int = 3
    filter_horizon: int = 0

    capabilities = Capabilities(level="mixer", bidirectional=False, cross_attention=False)
    small_settings: ClassVar[dict] = {"filter_width": 8}

    def flops(self, q_len, kv_len, head_dim):
        """With d = head_dim (d_model): the projection 2·L·d², the short conv 2·w·L·d, the long
        conv (filter FFN at L lags, one FFT convolution, the skip L·d), the gate and skip 2·L·d."""
        d, length = head_dim, q_len
        total = 2.0 * length * d * d + 2.0 * self.short_width * length * d + 2.0 * length * d
        if self.long_conv:
            total += (lc.implicit_filter_flops(length, d, self.filter_emb_dim, self.filter_width)
                      + lc.fft_flops(length, d) + length * d)
        return total

    def state_size(self, head_dim):
        return None if self.long_conv else max(self.short_width - 1, 0) * head_dim

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.mode not in MODES:
            raise ValueError(f"base_conv mode {self.mode!r} not in {MODES}")
        if self.short_width < 0 or (self.short_width == 0 and not self.long_conv):
            raise ValueError("base_conv needs short_width >= 1 or long_conv=True")
        if self.mode == "recurrent" and self.long_conv:
            raise ValueError("base_conv mode='recurrent' needs long_conv=False: the long "
                             "convolution has no fixed-size recurrence")
        length, d = x.shape[1], x.shape[2]
        dtype = lc.compute_dtype(x)
        u = lc.zero_padded(x.astype(dtype), mask)  # [B, L, d]
        c = u
        if self.short_width:
            taps = self.param("short_taps", nn.initializers.lecun_normal(in_axis=0, out_axis=1),
                              (self.short_width, d)).astype(dtype)  # [w, d]
            bias = self.param("short_bias", nn.initializers.zeros_init(), (d,)).astype(dtype)
            if self.mode == "recurrent":
                init = jnp.zeros((x.shape[0], self.short_width - 1, d), dtype)  # [B, w-1, d]
                buffer, c = scan_sequence(
                    lambda buf, u_t: lc.short_conv_step(buf, u_t, taps, bias), init, u)
                self.sow("intermediates", "recurrent_state", buffer)
            else:
                c = lc.short_conv(u, taps, bias)  # [B, L, d]
        if self.long_conv:
            horizon = self.filter_horizon or self.max_length
            if horizon < 1:
                raise ValueError("base_conv needs filter_horizon >= 1 or the model's max_length")
            h = lc.ImplicitFilter(d, horizon, self.filter_emb_dim, self.filter_width,
                                  name="filter")(length, dtype)  # [L, d]
            c = lc.zero_padded(c, mask)
            c = lc.fft_conv(c, h) + c
        gate = nn.Dense(d, dtype=dtype, name="projection")(x.astype(dtype))  # [B, L, d]
        return (gate * c + u).astype(x.dtype)


VARIANT = BaseConv
