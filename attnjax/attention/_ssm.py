"""Shared pieces of the state-space mixers (mamba.py, mamba2.py). Not a variant.

Short causal depthwise convolution over the sequence, in two forms that agree exactly up to
the order of additions:
  `causal_conv`:   out_t = b + Σ_{i<W} w_i ⊙ x_{t-W+1+i} (zeros before the start), all at once;
  `conv_recurrent`: the same token by token from a buffer of the last W - 1 inputs, which is
                    the decoder's conv state ([B, W - 1, C]; returned with the outputs).
Mamba's initialisers: the step size Δ's bias (inverse softplus of Δ ~ logU[Δ_min, Δ_max]) and
symmetric uniforms (PyTorch's Conv1d default U(±1/√W) for the depthwise kernel).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec


def causal_conv(x, kernel, bias):
    """x: [B, L, C]; kernel: [W, C] (w_{W-1} multiplies the current input); bias: [C]."""
    width, length = kernel.shape[0], x.shape[1]
    padded = jnp.pad(x, [(0, 0), (width - 1, 0), (0, 0)])  # [B, W - 1 + L, C]
    out = bias + padded[:, :length] * kernel[0]
    for i in range(1, width):
        out = out + padded[:, i : i + length] * kernel[i]
    return out  # [B, L, C]


def conv_recurrent(x, kernel, bias):
    """Token-by-token `causal_conv`. Returns ([B, L, C], the last W - 1 inputs [B, W - 1, C])."""
    width = kernel.shape[0]
    buffer = jnp.zeros((x.shape[0], width - 1, x.shape[2]), x.dtype)  # oldest first

    def step(buf, x_t):  # buf: [B, W - 1, C]; x_t: [B, C]
        window = jnp.concatenate([buf, x_t[:, None]], axis=1)  # [B, W, C]
        out = bias + window[:, 0] * kernel[0]
        for i in range(1, width):
            out = out + window[:, i] * kernel[i]
        return window[:, 1:], out

    buffer, out = rec.scan_sequence(step, buffer, x)
    return out, buffer


def symmetric_uniform(bound: float):
    """U(-bound, bound): e.g. PyTorch's Conv1d default for a depthwise kernel [W, C] and its
    bias (bound 1/√W, fan-in W), or Mamba's Δ projection (bound R^-1/2)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def step_bias_init(dt_min: float = 1e-3, dt_max: float = 1e-1, floor: float = 1e-4):
    """Bias b with softplus(b) = Δ ~ logU[dt_min, dt_max] (clamped below at `floor`)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype, math.log(dt_min), math.log(dt_max))
        dt = jnp.maximum(jnp.exp(u), floor)
        return dt + jnp.log(-jnp.expm1(-dt))  # softplus⁻¹(dt)

    return init


def mask_steps(mask, x, dt):
    """Padded positions: the conv input x [B, L, C] is 0 and the step Δ [B, L, ...] is 0, so
    the SSM state passes them unchanged (exp(0 · A) = 1, no input) and nothing at a real
    position depends on a padded input."""
    if mask is None:
        return x, dt
    real = mask.reshape(*mask.shape, *([1] * (dt.ndim - 2)))
    return jnp.where(mask[..., None], x, 0.0), jnp.where(real, dt, 0.0)
