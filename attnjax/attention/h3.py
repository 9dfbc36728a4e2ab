"""H3: a shift SSM and a diagonal SSM with multiplicative q, k, v interactions.

Paper: Fu, Dao, Saab, Thomas, Rudra, Ré 2023, "Hungry Hungry Hippos: Towards Language Modeling
with State Space Models" (arXiv:2212.14052), the H3 layer (its Algorithm 1, multi-head form).
Idea: linear attention with SSMs in place of the running sums. With q, k, v = x W_q, x W_k,
x W_v (d -> d, with bias) split into H = d / head_dim heads of width e = head_dim:
    k̄   = SSM_shift(k)          a shift matrix A, B = e_1, so a causal conv of width S
                                  (= shift_dim) with learned taps C, plus a skip D_k ⊙ k;
    kv_t = k̄_t ⊗ v_t            per head an e x e outer product (e² channels);
    y    = SSM_diag(kv)          an S4D system per head (_ssm.py), shared by its e² channels,
                                  plus a skip D_h ⊙ kv;
    o_t  = q_t · y_t             per head, [e] x [e, e] -> [e]; out = o W_o.
The shift SSM remembers the last S keys (it can compare a token with its predecessors); the
diagonal SSM keeps a decaying memory of every kv product (recall).
Forms (`mode`), equal up to rounding:
  fft:       both SSMs as FFT convolutions (kernels of length L). Time O(L · d · (d + e · log L)
             + L · H · N); memory O(L · d · e).
  recurrent: one scan over tokens; the state is the last S - 1 keys and the diagonal SSM's N / 2
             complex modes for each of the d · e kv channels: state_size = (S - 1) · d +
             d · e · N real numbers per sequence (complex counted as 2). Sows
             "recurrent_state" = (key buffer [B, S-1, d], modes [B, H, e, e, N/2, (re, im)]).
Causal only (a language-model layer: causal=False raises). Padded positions: k and v are zeroed
there before both SSMs, so a padded token adds nothing.
Deviations: the reference code (HazyResearch/H3, zoology) initialises the same way (taps, D's
standard normal; S4D-Lin) but trains A and Δ with a smaller learning rate; here every parameter
gets the run's. Zoology's figure 2 uses head_dim 2 and N = S = L (studies.zoology_variants).
"""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from attnjax.attention import _longconv as lc
from attnjax.attention import _ssm
from attnjax.attention._recurrence import scan_sequence
from attnjax.attention.base import AttentionBase, Capabilities

MODES = ("fft", "recurrent")


class H3(AttentionBase):
    """q ⊙ SSM_diag(SSM_shift(k) ⊗ v), multi-head, with input and output projections.

    Attributes:
      mode: 'fft' (training form) or 'recurrent' (scan over tokens, causal).
      state_dim: N of each head's diagonal SSM (N / 2 complex modes).
      shift_dim: S, the taps of the shift SSM on k (the reference code uses N for both).
      head_dim: e, the width of a head (e² kv channels per head); must divide d_model.
      a_init: S4D initialisation of the diagonal SSM's A ('lin', 'inv' or 'real').
    """

    mode: str = "fft"
    state_dim: int = 64
    shift_dim: int = 64
    head_dim: int = 1
    a_init: str = "lin"

    capabilities = Capabilities(level="mixer", bidirectional=False, cross_attention=False)
    small_settings: ClassVar[dict] = {"state_dim": 4, "shift_dim": 3, "head_dim": 2}
    recurrent_settings: ClassVar[dict] = {"mode": "recurrent"}

    def flops(self, q_len, kv_len, head_dim):
        """With d = head_dim (d_model), e = self.head_dim: four d x d projections (8·L·d²), the
        outer products and q contraction (3·L·d·e), the skips (2·L·d·(1 + e)), and the SSMs:
        fft: the diagonal kernels and FFT convolutions over d (shift) and d·e channels;
        recurrent: the S-tap conv (2·L·S·d) and the diagonal scan over d·e channels."""
        d, e, n = head_dim, self.head_dim, self.state_dim
        dense = 8.0 * q_len * d * d + 3.0 * q_len * d * e + 2.0 * q_len * d * (1 + e)
        if self.mode == "recurrent":
            ssms = 2.0 * q_len * self.shift_dim * d + _ssm.recurrence_flops(q_len, d * e, n)
        else:
            ssms = (_ssm.kernel_flops(q_len, d // e, n) + lc.fft_flops(q_len, d)
                    + lc.fft_flops(q_len, d * e, transforms=2) + lc.fft_flops(q_len, d // e, 1))
        return dense + ssms

    def state_size(self, head_dim):
        return (self.shift_dim - 1) * head_dim + head_dim * self.head_dim * self.state_dim

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        self.check_mixer_call(x, mask, causal)
        if self.mode not in MODES:
            raise ValueError(f"h3 mode {self.mode!r} not in {MODES}")
        batch, length, d = x.shape
        e = self.head_dim
        if e < 1 or d % e or self.shift_dim < 1:
            raise ValueError(f"h3 head_dim ({e}) must divide d_model ({d}); shift_dim >= 1")
        heads, dtype = d // e, lc.compute_dtype(x)
        q, k, v = (nn.Dense(d, dtype=dtype, name=n)(x.astype(dtype))
                   for n in ("query", "key", "value"))  # [B, L, d] each
        k, v = lc.zero_padded(k, mask), lc.zero_padded(v, mask)  # [B, L, d]
        normal = nn.initializers.normal(1.0)
        taps = self.param("shift_taps", normal, (self.shift_dim, d)).astype(dtype)  # [S, d]
        shift_skip = self.param("shift_D", normal, (d,)).astype(dtype)  # [d]
        dt_a, c_bar = _ssm.DiagonalSSM(heads, self.state_dim, self.a_init, name="ssm")(dtype)
        c_bar = c_bar[0]  # [H, M]
        skip = self.param("D", normal, (heads,)).astype(dtype)[:, None, None]  # [H, 1, 1]

        if self.mode == "recurrent":
            a_bar = jnp.exp(dt_a)[:, None, None]  # [H, 1, 1, M]

            def step(carry, inputs):
                buffer, s = carry  # [B, S-1, d], [B, H, e, e, M] complex
                q_t, k_t, v_t = (z.reshape(batch, heads, e) for z in inputs)  # [B, H, e]
                buffer, shifted = lc.short_conv_step(buffer, k_t.reshape(batch, d), taps)
                k_bar = shifted.reshape(batch, heads, e) + shift_skip.reshape(heads, e) * k_t
                kv = k_bar[..., :, None] * v_t[..., None, :]  # [B, H, e, e]
                s = a_bar * s + kv[..., None]
                y = 2.0 * jnp.einsum("bhijm,hm->bhij", s, c_bar).real + skip * kv
                return (buffer, s), jnp.einsum("bhi,bhij->bhj", q_t, y).reshape(batch, d)

            init = (jnp.zeros((batch, self.shift_dim - 1, d), dtype),
                    jnp.zeros((batch, heads, e, e, dt_a.shape[1]), dt_a.dtype))
            (buffer, s), o = scan_sequence(step, init, (q, k, v))  # o: [B, L, d]
            self.sow("intermediates", "recurrent_state",
                     (buffer, jnp.stack([s.real, s.imag], axis=-1)))
        else:
            taps_l = jnp.zeros((length, d), dtype).at[: min(length, self.shift_dim)].set(
                taps[:length])  # [L, d]: the S taps, zero beyond
            k_bar = lc.fft_conv(k, taps_l) + shift_skip * k  # [B, L, d]
            kv = (k_bar.reshape(batch, length, heads, e, 1)
                  * v.reshape(batch, length, heads, 1, e))  # [B, L, H, e, e]
            kernel = _ssm.kernel(dt_a, c_bar, length)[:, :, None, None]  # [L, H, 1, 1]
            y = lc.fft_conv(kv, kernel) + skip * kv  # [B, L, H, e, e]
            o = jnp.einsum("blhi,blhij->blhj", q.reshape(batch, length, heads, e), y)
            o = o.reshape(batch, length, d)
        return nn.Dense(d, dtype=dtype, name="output")(o).astype(x.dtype)


VARIANT = H3
