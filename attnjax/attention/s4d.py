"""S4D: a diagonal state space model per channel, trained as a long convolution.

Paper: Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal State
Space Models" (arXiv:2206.11893); the layer as in its reference code (state-spaces/s4, s4d.py).
Idea: every channel c of x is filtered by its own linear time-invariant system
    s_t = Ā s_{t-1} + B̄ x_t,   y_t = 2 Re(C s_t) + D x_t       (Ā diagonal complex, ZOH of A)
whose output is the causal convolution y = K * x + D x with K_l = 2 Re(C B̄ Ā^l) (see _ssm.py);
then out = GLU(W · GELU(y)) (a position-wise d -> 2d map and a gated linear unit), the S4 layer's
output transform. No input projection: the SSM acts on x directly.
Forms (`mode`), equal up to rounding:
  fft:       kernel K [L, d] by a Vandermonde product, then an FFT convolution of size
             n >= 2L - 1. Time O(L · d · N + d · L log L); memory O(L · d · N).
  recurrent: a scan over tokens of the complex diagonal system. Time O(L · d · N), state
             N / 2 complex = N real numbers per channel (a complex number counts as 2 floats),
             so state_size = N · d per sequence. Sows "recurrent_state" = s [B, d, N/2, (re, im)].
Bidirectional (causal=False, as LRA's S4): a second kernel K' with its own C (A, Δ shared) reads
the future: y_t = Σ_{j<=t} K_{t-j} x_j + Σ_{j>t} K'_{j-t-1} x_j + D x_t, one FFT of the filter
pair (the recurrent mode is causal only; non-causal calls always use this form).
Padding: padded positions are zeroed before the convolution, so they add nothing; a padded run at
either end of the sequence gives the real positions exactly what the real tokens alone give (the
filter is shift-invariant); padding in the middle would count as zeros and keep its lags.
Deviations: B fixed to 1 (absorbed into C, as the reference s4d.py); A and Δ are trained with the
run's learning rate and weight decay (the reference uses a smaller lr, no decay); no dropout.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn

from attnjax.attention import _longconv as lc
from attnjax.attention import _ssm
from attnjax.attention.base import AttentionBase, Capabilities

MODES = ("fft", "recurrent")


class S4D(AttentionBase):
    """Per-channel diagonal SSM convolution + D skip, GELU, then a GLU output map.

    Attributes:
      mode: 'fft' (convolution kernel, the training form) or 'recurrent' (causal scan).
      state_dim: N, the state size of each channel's real system (N / 2 complex modes).
      a_init: 'lin' (S4D-Lin), 'inv' (S4D-Inv) or 'real' (S4D-Real) initialisation of A.
      dt_min, dt_max: the range of the initial step sizes Δ (log-uniform).
    """

    mode: str = "fft"
    state_dim: int = 64
    a_init: str = "lin"
    dt_min: float = 1e-3
    dt_max: float = 1e-1

    capabilities = Capabilities(level="mixer", cross_attention=False)
    small_settings: ClassVar[dict] = {"state_dim": 4}
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}

    def flops(self, q_len, kv_len, head_dim):
        """With d = head_dim (d_model), causal: the kernel and FFT convolution (fft) or the scan
        (recurrent), the D skip (2·L·d) and the GLU map (4·L·d²). causal=False adds a second
        kernel; not counted here (the base signature carries no mode)."""
        d, n = head_dim, self.state_dim
        if self.mode == "recurrent":
            mixing = _ssm.recurrence_flops(q_len, d, n)
        else:
            mixing = _ssm.kernel_flops(q_len, d, n) + lc.fft_flops(q_len, d)
        return mixing + 2.0 * q_len * d + 4.0 * q_len * d * d

    def state_size(self, head_dim):
        return self.state_dim * head_dim  # N real numbers (N / 2 complex) per channel

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.mode not in MODES:
            raise ValueError(f"s4d mode {self.mode!r} not in {MODES}")
        length, d = x.shape[1], x.shape[2]
        dtype = lc.compute_dtype(x)
        u = lc.zero_padded(x.astype(dtype), mask)  # [B, L, d]
        ssm = _ssm.DiagonalSSM(d, self.state_dim, self.a_init, self.dt_min, self.dt_max,
                               directions=1 if causal else 2, name="ssm")
        dt_a, c_bar = ssm(dtype)  # [d, M], [dirs, d, M]
        skip = self.param("D", nn.initializers.normal(1.0), (d,)).astype(dtype)

        if causal and self.mode == "recurrent":
            y, state = _ssm.recurrence(u, dt_a, c_bar[0])  # [B, L, d], [B, d, M, 2]
            self.sow("intermediates", "recurrent_state", state)
        elif causal:
            y = lc.fft_conv(u, _ssm.kernel(dt_a, c_bar[0], length))
        else:
            y = lc.fft_conv_pair(u, _ssm.kernel(dt_a, c_bar[0], length),
                                 _ssm.kernel(dt_a, c_bar[1], length))
        y = nn.gelu(y + skip * u, approximate=False)  # [B, L, d]
        out = nn.Dense(2 * d, dtype=dtype, name="output")(y)  # [B, L, 2d]
        return nn.glu(out, axis=-1).astype(x.dtype)  # [B, L, d]


VARIANT = S4D
