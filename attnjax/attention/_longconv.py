"""Shared machinery of the convolutional mixers (s4d, h3, hyena, base_conv). Not a variant.

Convolutions here are depthwise (one filter per channel) over the sequence axis 1 of x [B, L, C];
a filter k [L or w, C] holds k[i] = the weight of the input i positions back (lag i).
  short conv   `short_conv`: out_t = Σ_{i<w} k[i] x_{t-i} (+ bias), w small, as w shifted copies
               (exact: no arithmetic with the future). Non-causal (centred): lags from
               -(w // 2) to w - 1 - w // 2, i.e. out_t = Σ_i k[i] x_{t - i + w // 2}.
               Its token-by-token form `short_conv_step` keeps the last w - 1 inputs.
  long conv    `fft_conv`: the same sum with a filter as long as the sequence, by FFT of size
               n >= 2L - 1 (the next power of two), so the circular wrap-around never reaches a
               kept output: time O(L log L) per channel. `fft_conv_pair` adds a backward filter
               (out_t += Σ_{j>t} k_b[j - t - 1] x_j) in the same FFT, as LRA's bidirectional S4.
               An FFT output is a sum over all frequencies, so future inputs change past outputs
               by rounding (~1e-7 relative in float32), never by more; the direct sums in
               tests/test_variants_conv.py check the forms exactly.
  implicit filter `ImplicitFilter` (Hyena, Poli et al. 2023): h_t = FFN(z_t) · exp(-δ t / T)
               over positional features z_t of the lag t, evaluated at any length.
Arithmetic is in `compute_dtype(x)` = float32 for bfloat16/float32 inputs, float64 for float64
inputs (jax x64), with the parameters cast to it.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnjax.attention._recurrence import compute_dtype  # noqa: F401 - re-exported


def zero_padded(x, mask):
    """x [B, L, ...] with exact zeros where mask [B, L] is False (a padded position)."""
    if mask is None:
        return x
    real = mask.reshape(mask.shape + (1,) * (x.ndim - 2))
    return jnp.where(real, x, jnp.zeros((), x.dtype))


def fft_size(length: int) -> int:
    """The power of two >= 2L - 1: a linear convolution of two length-L signals fits."""
    return 1 << max(2 * length - 2, 1).bit_length()


def fft_conv(x, k):
    """Causal long convolution, out_t = Σ_{i<=t} k[i] x_{t-i}: x [B, L, ...] and a filter
    k [L, ...] broadcastable to x[0] -> [B, L, ...]."""
    length, n = x.shape[1], fft_size(x.shape[1])
    spectrum = jnp.fft.rfft(x, n=n, axis=1) * jnp.fft.rfft(k, n=n, axis=0)[None]  # [B, n/2+1, C]
    return jnp.fft.irfft(spectrum, n=n, axis=1)[:, :length].astype(x.dtype)


def fft_conv_pair(x, k_forward, k_backward):
    """Bidirectional: out_t = Σ_{j<=t} k_f[t - j] x_j + Σ_{j>t} k_b[j - t - 1] x_j.

    One circular filter of size n: k_f at lags 0..L-1 and k_b reversed at the end, lags
    -1..-(L-1) (n >= 2L - 1 keeps the two apart)."""
    length, n = x.shape[1], fft_size(x.shape[1])
    tail = k_backward[: length - 1][::-1]  # [L-1, C]: lag -(L-1) ... -1
    middle = jnp.zeros((n - 2 * length + 1, k_forward.shape[1]), k_forward.dtype)
    circular = jnp.concatenate([k_forward, middle, tail], axis=0)  # [n, C]
    spectrum = jnp.fft.rfft(x, n=n, axis=1) * jnp.fft.rfft(circular, axis=0)[None]
    return jnp.fft.irfft(spectrum, n=n, axis=1)[:, :length].astype(x.dtype)


def fft_flops(length: int, channels: int, transforms: int = 3) -> float:
    """An FFT convolution: `transforms` real FFTs of size n (~2.5 n log2 n each) and the complex
    product (6 per frequency), per channel. The filter's transform counts as one of them."""
    n = fft_size(length)
    return channels * (transforms * 2.5 * n * math.log2(n) + 6.0 * (n // 2 + 1))


def short_conv(x, kernel, bias=None, causal: bool = True):
    """Depthwise conv of width w: x [B, L, C], kernel [w, C] (lag-major), bias [C] or None."""
    width, length = kernel.shape[0], x.shape[1]
    back = width - 1 if causal else width - 1 - width // 2  # positions before t that are read
    ahead = width - 1 - back
    padded = jnp.pad(x, [(0, 0), (back, ahead)] + [(0, 0)] * (x.ndim - 2))
    # lag i reads x_{t - i + ahead}, which sits at padded index t + back - i + ahead
    out = sum(kernel[i] * padded[:, width - 1 - i : width - 1 - i + length]
              for i in range(width))
    return out if bias is None else out + bias


def short_conv_step(buffer, x_t, kernel, bias=None):
    """One causal step. buffer [B, w-1, C]: the last w - 1 inputs, oldest first; x_t [B, C].
    Returns (new buffer, out_t [B, C])."""
    window = jnp.concatenate([buffer, x_t[:, None]], axis=1)  # [B, w, C], newest last
    out = jnp.einsum("bwc,wc->bc", window, kernel[::-1])
    out = out if bias is None else out + bias
    return window[:, 1:], out


class ImplicitFilter(nn.Module):
    """Hyena's implicit long filter: `channels` filters of any length L, h [L, channels].

    Lag t (0, 1, ...) has features z_t = [t / T, cos(2π f t / T), -sin(2π f t / T) for the
    `(emb_dim - 1) // 2` frequencies f = 0, 1, ...] (T = `horizon`). An FFN of width `width`
    with sin activations (one learned frequency per unit, shared by the layers, initially 1)
    maps z_t to the channels; the result is windowed by exp(-|δ_c| t / T), δ_c fixed and spread
    from log(target) / slow to log(target) / fast over the channels (the fastest channel has
    decayed to `target` at t = fast · T). As in the authors' code (safari, zoology).
    """

    channels: int
    horizon: int
    emb_dim: int = 3
    width: int = 64
    num_inner: int = 2
    target: float = 1e-2
    fast: float = 0.3
    slow: float = 1.5

    @nn.compact
    def __call__(self, length: int, dtype=jnp.float32):
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"implicit filter emb_dim must be odd and >= 3, got {self.emb_dim}")
        if self.horizon < 1:
            raise ValueError(f"implicit filter horizon must be >= 1, got {self.horizon}")
        t = jnp.arange(length, dtype=dtype)[:, None] / self.horizon  # [L, 1]
        freqs = jnp.arange((self.emb_dim - 1) // 2, dtype=dtype)[None]  # [1, bands]
        angle = 2 * math.pi * freqs * t
        z = jnp.concatenate([t, jnp.cos(angle), -jnp.sin(angle)], axis=-1)  # [L, emb_dim]
        freq = self.param("sin_freq", nn.initializers.ones_init(), (self.width,)).astype(dtype)
        h = jnp.sin(freq * nn.Dense(self.width, dtype=dtype, name="ffn_in")(z))  # [L, width]
        for i in range(self.num_inner):
            h = jnp.sin(freq * nn.Dense(self.width, dtype=dtype, name=f"ffn_{i}")(h))
        h = nn.Dense(self.channels, use_bias=False, dtype=dtype, name="ffn_out")(h)  # [L, C]
        log_t = math.log(self.target)
        delta = np.linspace(log_t / self.slow, log_t / self.fast, self.channels)  # [C] < 0
        return h * jnp.exp(-t * jnp.abs(jnp.asarray(delta, dtype)))  # [L, C]


def implicit_filter_flops(length: int, channels: int, emb_dim: int, width: int,
                          num_inner: int = 2) -> float:
    """ImplicitFilter's FFN at L lags (the window's multiply is not counted)."""
    return 2.0 * length * width * (emb_dim + num_inner * width + channels)
