"""Hyena: long implicit convolutions interleaved with data-controlled gates.

Paper: Poli, Massaroli, Nguyen, Fu, Dao, Baccus, Bengio, Ermon, Ré 2023, "Hyena Hierarchy:
Towards Larger Convolutional Language Models" (arXiv:2302.10866); the operator as in the
authors' code (safari's HyenaOperator, zoology's Hyena).
Idea: N + 1 projections of x (N = `order`), each through a short causal depthwise conv of width
`short_width` (with bias): [g_0, ..., g_{N-1}, v]. Then z = v and, for n = N-1, ..., 1,
    z <- h_n * (g_n ⊙ z) + b_n ⊙ (g_n ⊙ z)      (a long causal convolution plus a skip b_n)
and y = g_0 ⊙ z, out = y W_out. So order 2 (the paper's usual operator) has three projections
and one long filter: out = (g_0 ⊙ (h * (g_1 ⊙ v) + b ⊙ g_1 ⊙ v)) W_out.
The long filters h [L, (N-1)·d] are implicit (_longconv.ImplicitFilter): an FFN with sin
activations of positional features of the lag, windowed by a fixed exponential decay per channel.
Lags are measured in units of the horizon T = `filter_horizon`, or the model's max_length when
0 (as the code's l_max); the filter can be evaluated at any length, so inputs longer than T are
accepted (the decay window makes far lags small), and nothing is sized by the length.
Complexity (d = d_model): time O(L · d² · N + N · d · L log L) by FFT convolutions of size
n >= 2L - 1; memory O(N · L · d). Causal only (causal=False raises).
No recurrent form: each output reads the whole history through a filter as long as the sequence,
so a decoder keeps every past input (state_size None: grows with the length). Distilling the
filters into a finite SSM (Massaroli et al. 2023, "Laughing Hyena") is not done here.
Padding: the inputs of the short and the long convolutions are zeroed at padded positions, so a
padded token adds nothing and the real positions of a sequence padded at either end see what its
real tokens alone give.
Deviations: one head and one block (the code's defaults); no filter dropout; the filter's
parameters get the run's learning rate and weight decay (the code: their own lr, no decay).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention import _longconv as lc
from attnjax.attention.base import AttentionBase, Capabilities


class Hyena(AttentionBase):
    """Order-N Hyena operator: short convs, implicit long filters, gates; projections in/out.

    Attributes:
      order: N >= 2: N + 1 projections and N - 1 long filters.
      short_width: width of the short causal depthwise conv on the projections.
      filter_width: hidden width of the implicit filter's FFN.
      filter_emb_dim: size of the positional features (odd: lag, then cos/sin pairs).
      filter_horizon: T, the length unit of the filter's lags; 0 = the model's max_length.
    """

    order: int = 2
    short_width: int = 3
    filter_width: int = 64
    filter_emb_dim: int = 3
    filter_horizon: int = 0

    capabilities = Capabilities(level="mixer", bidirectional=False, cross_attention=False)
    small_settings: ClassVar[dict] = {"filter_width": 8, "filter_emb_dim": 5}

    def _filter(self, d: int) -> lc.ImplicitFilter:
        horizon = self.filter_horizon or self.max_length
        if horizon < 1:
            raise ValueError("hyena needs filter_horizon >= 1 or the model's max_length")
        return lc.ImplicitFilter((self.order - 1) * d, horizon, self.filter_emb_dim,
                                 self.filter_width, name="filter")

    def flops(self, q_len, kv_len, head_dim):
        """With d = head_dim (d_model), N = order: projections 2·L·d·(N+1)·d + 2·L·d², short
        convs 2·w·L·(N+1)·d, the filter FFN at L lags, N - 1 FFT convolutions over d channels,
        gates and skips 4·L·d·N."""
        d, n, length = head_dim, self.order, q_len
        filt = lc.implicit_filter_flops(length, (n - 1) * d, self.filter_emb_dim,
                                        self.filter_width)
        return (2.0 * length * d * d * (n + 2) + 2.0 * self.short_width * length * (n + 1) * d
                + filt + (n - 1) * lc.fft_flops(length, d)
                + 4.0 * length * d * n)

    def state_size(self, head_dim):
        return None  # the long filters read the whole history

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.order < 2 or self.short_width < 1:
            raise ValueError(f"hyena order must be >= 2 and short_width >= 1, got "
                             f"{self.order}, {self.short_width}")
        length, d, n = x.shape[1], x.shape[2], self.order
        dtype = lc.compute_dtype(x)
        u = nn.Dense((n + 1) * d, dtype=dtype, name="in_proj")(x.astype(dtype))  # [B, L, (N+1)d]
        taps = self.param("short_taps", nn.initializers.lecun_normal(in_axis=0, out_axis=1),
                          (self.short_width, (n + 1) * d))  # [w, (N+1)d]
        bias = self.param("short_bias", nn.initializers.zeros_init(), ((n + 1) * d,))
        u = lc.short_conv(lc.zero_padded(u, mask), taps.astype(dtype), bias.astype(dtype))
        *gates, z = jnp.split(u, n + 1, axis=-1)  # N gates [B, L, d], v [B, L, d]

        filters = self._filter(d)(length, dtype).reshape(length, n - 1, d)  # [L, N-1, d]
        skips = self.param("filter_bias", nn.initializers.normal(1.0), (n - 1, d)).astype(dtype)
        for i, gate in enumerate(reversed(gates[1:])):
            z = lc.zero_padded(gate * z, mask)  # [B, L, d]
            z = lc.fft_conv(z, filters[:, i]) + skips[i] * z
        y = gates[0] * z  # [B, L, d]
        return nn.Dense(d, dtype=dtype, name="out_proj")(y).astype(x.dtype)


VARIANT = Hyena
