"""State-space machinery shared by s4d, h3, mamba, mamba2 and rwkv6. Not a variant.

1. The diagonal SSM of S4D (s4d, h3): Gu, Gupta, Goel, Ré 2022, "On the Parameterization and
Initialization of Diagonal State Space Models" (arXiv:2206.11893).
Per channel c, a continuous SSM x' = A x + B u, y = 2 Re(C x) with
A diagonal complex: M = N / 2 modes (N = `state_dim`, the paper's state size: the conjugate
modes are implied by taking 2 Re, so the real system has N states). B = 1 (fixed, absorbed
into C); step Δ_c = exp(log_dt_c). Zero-order hold gives
    Ā = exp(Δ A),   B̄ = (exp(Δ A) - 1) / A,   K_l = 2 Re Σ_m C_m B̄_m Ā_m^l     (kernel, lag l)
computed as a Vandermonde product exp(l · ΔA) (time O(L · M) per channel). The same system run
token by token keeps s_t = Ā s_{t-1} + u_t (s = x / B̄, so y_t = 2 Re(C B̄ s_t)): M complex =
N real numbers per channel, the state a decoder carries.
Initialisations (`a_init`): 'lin' (S4D-Lin, A_m = -1/2 + iπm), 'inv' (S4D-Inv,
A_m = -1/2 + i (N/π)(N/(2m+1) - 1)), 'real' (S4D-Real, A_m = -(m + 1), M real modes); log Δ
uniform in [log dt_min, log dt_max]; C complex normal (variance 1/2 per part). Re A is kept
negative as -exp(param).

2. The selective-SSM helpers (mamba, mamba2, rwkv6): the short causal depthwise convolution
in its two forms (`causal_conv`, all at once; `conv_recurrent`, token by token from a buffer of
the last W - 1 inputs, the decoder's conv state [B, W - 1, C]), both on _longconv's short conv
with the kernel stored time-major (w_{W-1} multiplies the current input); Mamba's initialisers
(the step size Δ's bias: inverse softplus of Δ ~ logU[Δ_min, Δ_max]; symmetric uniforms,
PyTorch's Conv1d default U(±1/√W)) and the padding rule (`mask_steps`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnjax.attention._longconv import short_conv, short_conv_step
from attnjax.attention._recurrence import scan_sequence

INITS = ("lin", "inv", "real")


def initial_a(init: str, state_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(Re A, Im A) of the M = N / 2 modes."""
    if init not in INITS:
        raise ValueError(f"S4D init {init!r} not in {INITS}")
    m = np.arange(state_dim // 2)
    if init == "real":
        return -(m + 1.0), np.zeros(len(m))
    if init == "lin":
        return np.full(len(m), -0.5), math.pi * m
    n = state_dim
    return np.full(len(m), -0.5), n / math.pi * (n / (2 * m + 1) - 1)


class DiagonalSSM(nn.Module):
    """`channels` independent S4D systems; returns their discretisation.

    __call__(dtype) -> (dt_a [C, M] complex = ΔA, c_bar [directions, C, M] complex = C B̄).
    `directions` > 1 gives each direction its own C (A and Δ shared), as LRA's bidirectional S4.
    """

    channels: int
    state_dim: int = 64
    a_init: str = "lin"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    directions: int = 1

    @nn.compact
    def __call__(self, dtype=jnp.float32):
        if self.state_dim < 2 or self.state_dim % 2:
            raise ValueError(f"S4D state_dim must be even and >= 2, got {self.state_dim}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"S4D needs 0 < dt_min <= dt_max, got {self.dt_min}, {self.dt_max}")
        re, im = initial_a(self.a_init, self.state_dim)
        shape, modes = (self.channels, self.state_dim // 2), self.state_dim // 2
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)

        def log_dt_init(key, s, dt=jnp.float32):
            return jax.random.uniform(key, s, dt, lo, hi)

        log_dt = self.param("log_dt", log_dt_init, (self.channels,))  # [C]
        log_neg_re = self.param("log_neg_re", lambda k, s: jnp.broadcast_to(
            jnp.log(-jnp.asarray(re, jnp.float32)), s), shape)  # [C, M]
        imag = self.param("imag", lambda k, s: jnp.broadcast_to(
            jnp.asarray(im, jnp.float32), s), shape)  # [C, M]
        c = self.param("c", nn.initializers.normal(math.sqrt(0.5)),
                       (self.directions, self.channels, modes, 2))  # [dirs, C, M, (re, im)]
        complex_dtype = jnp.result_type(dtype, jnp.complex64)
        a = (-jnp.exp(log_neg_re.astype(dtype)) + 1j * imag.astype(dtype)).astype(complex_dtype)
        dt_a = jnp.exp(log_dt.astype(dtype))[:, None] * a  # [C, M] = ΔA
        b_bar = (jnp.exp(dt_a) - 1.0) / a  # ZOH, B = 1
        c = c.astype(dtype)
        return dt_a, (c[..., 0] + 1j * c[..., 1]) * b_bar  # [C, M], [dirs, C, M]


def kernel(dt_a, c_bar, length: int):
    """K [L, C] = 2 Re Σ_m c_bar[c, m] exp(l · ΔA[c, m]) for lags l < L (Vandermonde)."""
    lags = jnp.arange(length, dtype=dt_a.real.dtype)
    powers = jnp.exp(lags[:, None, None] * dt_a[None])  # [L, C, M] = Ā^l
    return 2.0 * jnp.einsum("lcm,cm->lc", powers, c_bar).real


def kernel_flops(length: int, channels: int, state_dim: int) -> float:
    """The Vandermonde product: per lag and mode a complex exp (~20) and multiply-add (8)."""
    return 28.0 * length * channels * state_dim / 2


def recurrence(u, dt_a, c_bar):
    """Token scan: u [B, L, C] real; returns (y [B, L, C] = 2 Re(c_bar · s_t), final state
    [B, C, M, 2] (s as (re, im) pairs: N real numbers per channel))."""
    a_bar = jnp.exp(dt_a)  # [C, M]
    init = jnp.zeros((u.shape[0], *dt_a.shape), dt_a.dtype)  # [B, C, M] complex

    def step(s, u_t):  # u_t [B, C]
        s = a_bar * s + u_t[..., None]
        return s, 2.0 * jnp.einsum("bcm,cm->bc", s, c_bar).real

    final, y = scan_sequence(step, init, u)
    return y, jnp.stack([final.real, final.imag], axis=-1)


def recurrence_flops(length: int, channels: int, state_dim: int) -> float:
    """Per token, channel and mode: Ā s + u (complex multiply-add, 8) and Re(C s) (4)."""
    return 12.0 * length * channels * state_dim / 2


def causal_conv(x, kernel, bias):
    """x: [B, L, C]; kernel: [W, C] (w_{W-1} multiplies the current input); bias: [C]."""
    return short_conv(x, kernel[::-1], bias, causal=True)  # [B, L, C]


def conv_recurrent(x, kernel, bias):
    """Token-by-token `causal_conv`. Returns ([B, L, C], the last W - 1 inputs [B, W - 1, C])."""
    buffer = jnp.zeros((x.shape[0], kernel.shape[0] - 1, x.shape[2]), x.dtype)  # oldest first
    step = lambda buf, x_t: short_conv_step(buf, x_t, kernel[::-1], bias)
    buffer, out = scan_sequence(step, buffer, x)
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
