"""Mamba-2: the SSD layer (scalar decay per head, state-space duality) in place of attention.

Paper: Dao & Gu 2024, "Transformers are SSMs: Generalized Models and Efficient Algorithms
Through Structured State Space Duality" (arXiv:2405.21060), the Mamba-2 block (section 7.1).
Idea (d = d_model, E = expand · d channels in H = E / P heads of size P, N = d_state,
σ = SiLU): one input projection gives z [E], x [E], B [N], C [N] and δ [H]; x, B, C go
through a short causal depthwise conv and σ; per head h,
  Δ_t = softplus(δ_t + b_Δ),   A_h = -exp(A_log_h) < 0,
  h_t = exp(Δ_t A_h) h_{t-1} + Δ_t B_tᵀ x_t   (state [N, P]; B, C shared by all heads),
  y_t = C_t h_t + D_h x_t,
  out = RMSNorm(y ⊙ σ(z)) W_out               (the gated norm, learned scale).
This is `_recurrence`'s diagonal-decay linear attention with q = C, k = B, v = Δ x and one
log-decay Δ A per head (G = 1). Initialisation as the authors': A_h ~ U[1, 16], D = 1,
Δ = softplus(b_Δ) ~ logU[1e-3, 1e-1], conv U(±1/√W).
Two forms (`mode`), equal up to rounding:
  chunked:   SSD's chunked algorithm (`decay_chunked`: quadratic inside chunks of C, a scan
             over chunk states): time O(L · C · (N + P) + L · N · P) per head,
             memory O(L · C + (L / C) · N · P);
  recurrent: the conv from a buffer and the SSM by a scan over tokens, time O(L · N · P) per
             head; decoding state H · N · P (= E · N) + (W - 1) · (E + 2N) (conv buffer).
Causal only (causal=False raises). Padded positions have zero conv input and Δ = 0, so the
state passes them unchanged and no real output depends on a padded input.
Deviations: one group of B, C (the paper's default n_groups = 1); no fused kernel.
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnjax.attention import _recurrence as rec
from attnjax.attention import _ssm
from attnjax.attention.base import AttentionBase, Capabilities


def decay_rate_init(key, shape, dtype=jnp.float32):
    """A_log with A = exp(A_log) ~ U[1, 16] per head."""
    return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))


class Mamba2(AttentionBase):
    """The Mamba-2 block: in-projection, short conv, SSD with a scalar decay per head, gated
    RMSNorm, out-projection.

    Attributes:
      mode: 'chunked' (training form) or 'recurrent' (scan over tokens).
      chunk_size: chunk length C of the chunked form (any L; the last chunk is zero-padded).
      expand: E / d_model.
      head_dim: P, channels per head (must divide E).
      d_state: N, the state size per channel (B, C width).
      conv_width: W of the depthwise causal convolution.
      norm_eps: epsilon of the gated RMSNorm.
    """

    mode: str = "chunked"
    chunk_size: int = 64
    expand: int = 2
    head_dim: int = 64
    d_state: int = 64
    conv_width: int = 4
    norm_eps: float = 1e-5
    small_settings: ClassVar[dict] = {"chunk_size": 5, "head_dim": 4, "d_state": 4}
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}  # sows (conv buffer, h)

    capabilities = Capabilities(level="mixer", bidirectional=False, cross_attention=False)

    def _sizes(self, d_model):
        e = self.expand * d_model
        if e % self.head_dim:
            raise ValueError(f"mamba2: head_dim {self.head_dim} must divide expand · d_model "
                             f"= {e}")
        return e, e // self.head_dim, self.d_state

    def flops(self, q_len, kv_len, head_dim):
        """With d_model = head_dim: projections (in d·(2E + 2N + H), out E·d), the conv
        (W·(E + 2N)), the SSM (per head `decay_flops` with Dk = N, Dv = P), per token."""
        d = head_dim
        e, h, n = self._sizes(d)
        proj = 2.0 * q_len * (d * (2 * e + 2 * n + h) + e * d)
        conv = 2.0 * q_len * self.conv_width * (e + 2 * n)
        ssm = h * rec.decay_flops(self.mode, q_len, self.chunk_size, n, self.head_dim, False)
        return proj + conv + ssm + 10.0 * q_len * e  # + skip, gate and norm

    def state_size(self, head_dim):
        e, _, n = self._sizes(head_dim)
        return e * n + (self.conv_width - 1) * (e + 2 * n)  # h and the conv buffer

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        rec.check_settings("mamba2", self.mode, self.chunk_size)
        batch, length, d = x.shape
        e, heads, n = self._sizes(d)
        dtype = rec.compute_dtype(x)  # float32 (float64 for float64 inputs)
        proj = nn.Dense(2 * e + 2 * n + heads, use_bias=False, name="in_proj")(x.astype(dtype))
        z, xbc, delta = proj[..., :e], proj[..., e : 2 * e + 2 * n], proj[..., 2 * e + 2 * n :]
        dt = nn.softplus(delta + self.param("dt_bias", _ssm.step_bias_init(), (heads,)))  # [B,L,H]
        xbc, dt = _ssm.mask_steps(mask, xbc, dt)  # padded: zero conv input, Δ = 0
        init = _ssm.symmetric_uniform(self.conv_width**-0.5)
        kernel = self.param("conv_kernel", init, (self.conv_width, e + 2 * n))  # [W, E + 2N]
        conv_bias = self.param("conv_bias", init, (e + 2 * n,))
        if self.mode == "chunked":
            xbc = _ssm.causal_conv(xbc, kernel, conv_bias)
        else:
            xbc, conv_state = _ssm.conv_recurrent(xbc, kernel, conv_bias)  # [B, W - 1, E + 2N]
        xbc = nn.silu(xbc)
        xs = xbc[..., :e].reshape(batch, length, heads, self.head_dim)  # [B, L, H, P]
        b_in, c_out = (jnp.broadcast_to(m[:, :, None], (batch, length, heads, n))
                       for m in (xbc[..., e : e + n], xbc[..., e + n :]))  # [B, L, H, N] each

        a = -jnp.exp(self.param("A_log", decay_rate_init, (heads,)))  # [H]
        log_decay = (dt * a)[..., None]  # Δ A: [B, L, H, 1]
        v = dt[..., None] * xs  # Δ x: [B, L, H, P]
        if self.mode == "chunked":
            y = rec.decay_chunked(c_out, b_in, v, log_decay, self.chunk_size)  # [B, L, H, P]
        else:
            y, h = rec.decay_recurrent(c_out, b_in, v, log_decay)  # h: [B, H, N, P]
            self.sow("intermediates", "recurrent_state", (conv_state, h))
        y = y + self.param("D", nn.initializers.ones, (heads,))[:, None] * xs  # skip
        y = y.reshape(batch, length, e) * nn.silu(z)  # gate: [B, L, E]
        y = y * jax.lax.rsqrt(jnp.mean(y * y, axis=-1, keepdims=True) + self.norm_eps)
        y = y * self.param("norm_scale", nn.initializers.ones, (e,))
        return nn.Dense(d, use_bias=False, name="out_proj")(y).astype(x.dtype)  # [B, L, d]


VARIANT = Mamba2
