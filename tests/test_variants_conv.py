"""Convolutional and state-space mixers (s4d, h3, hyena, base_conv) in float64 (jax x64): each
training form (FFT convolutions) against an independent NumPy formula (direct O(L²) sums, the
SSM kernel by powers of Ā, the implicit filter from its FFN), and each recurrent form against
the training form, with its sown state counted against state_size.

L = 13 is not a power of two (the FFT size is 32). The generic mixer contract (causality,
padding, gradients, capabilities) is tests/test_mixers.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention

B, L, D = 2, 13, 8
MAX_LENGTH = 16
TOL = 1e-10


def _x(seed=0, length=L):
    return np.random.default_rng(seed).standard_normal((B, length, D))


def _mask(length=L):
    """Row 0: last 3 positions padded. Row 1: first and last 5 padded."""
    mask = np.ones((B, length), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return mask


def _module(name, **overrides):
    settings = {**attention.get(name).small_settings, "max_length": MAX_LENGTH, **overrides}
    return attention.create(name, **settings)


def _params(module, causal, seed=11):
    """float64 parameters of the module's shapes, drawn by NumPy (a formula holds for any)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((B, L, D)),
                                                causal=causal))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: 0.5 * rng.standard_normal(s.shape), shapes)


def _apply(module, params, x, mask, causal):
    """(output, sown intermediates) in float64."""
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        fn = jax.jit(lambda p, x, m: module.apply({"params": p}, x, mask=m, causal=causal,
                                                  mutable="intermediates"))
        out, state = fn(p, jnp.asarray(x, jnp.float64), None if mask is None else jnp.asarray(mask))
        assert out.dtype == jnp.float64
        return np.asarray(out), jax.tree.map(np.asarray, state)


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


def _counted_state(state):
    """Floats in the sown recurrent state per sequence (leaves have a leading batch axis)."""
    leaves = jax.tree.leaves(state["intermediates"]["recurrent_state"])
    assert all(leaf.shape[0] == B and leaf.dtype == np.float64 for leaf in leaves)
    return sum(leaf.size for leaf in leaves) // B


# ------------------------------------------------------------------------ NumPy formulas


def _zero(x, mask):
    return x if mask is None else x * mask[..., None]


def _dense(p, x):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _causal_conv(u, k):
    """out_t = Σ_{j<=t} k[t - j] u_j over axis 1; u [B, L, ...], k [L or more, ...]."""
    out = np.zeros(u.shape)
    for t in range(u.shape[1]):
        for j in range(t + 1):
            if t - j < len(k):
                out[:, t] += k[t - j] * u[:, j]
    return out


def _ssm_kernel(p, length, direction=0):
    """K [L, C] = 2 Re Σ_m C B̄ Ā^l, Ā = exp(Δ A), B̄ = (Ā - 1) / A; powers by repeated products."""
    a = -np.exp(p["log_neg_re"]) + 1j * p["imag"]  # [C, M]
    a_bar = np.exp(np.exp(p["log_dt"])[:, None] * a)
    c = p["c"][direction, ..., 0] + 1j * p["c"][direction, ..., 1]
    power, out = np.ones_like(a_bar), []
    for _ in range(length):
        out.append(2 * (c * (a_bar - 1) / a * power).sum(-1).real)
        power = power * a_bar
    return np.stack(out)


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _np_s4d(p, x, mask, causal):
    u = _zero(x, mask)
    y = _causal_conv(u, _ssm_kernel(p["ssm"], L)) + p["D"] * u
    if not causal:  # + Σ_{j>t} K'[j - t - 1] u_j
        back = _ssm_kernel(p["ssm"], L, direction=1)
        for t in range(L):
            for j in range(t + 1, L):
                y[:, t] += back[j - t - 1] * u[:, j]
    out = _dense(p["output"], _gelu(y))
    return out[..., :D] / (1 + np.exp(-out[..., D:]))  # GLU


def _np_h3(p, x, mask, head_dim):
    q, k, v = (_dense(p[n], x) for n in ("query", "key", "value"))
    k, v = _zero(k, mask), _zero(v, mask)
    k_bar = _causal_conv(k, p["shift_taps"]) + p["shift_D"] * k
    heads = D // head_dim
    split = lambda z: z.reshape(B, L, heads, head_dim)
    kv = np.einsum("blhi,blhj->blhij", split(k_bar), split(v))
    kernel = _ssm_kernel(p["ssm"], L)[:, :, None, None]  # [L, H, 1, 1]
    y = _causal_conv(kv, kernel) + p["D"][:, None, None] * kv
    o = np.einsum("blhi,blhij->blhj", split(q), y).reshape(B, L, D)
    return _dense(p["output"], o)


def _np_filter(p, channels, length, horizon, emb_dim):
    t = np.arange(length)[:, None] / horizon
    angle = 2 * np.pi * np.arange((emb_dim - 1) // 2)[None] * t
    h = np.sin(p["sin_freq"] * _dense(p["ffn_in"], np.concatenate(
        [t, np.cos(angle), -np.sin(angle)], axis=1)))
    h = np.sin(p["sin_freq"] * _dense(p["ffn_0"], h))
    h = np.sin(p["sin_freq"] * _dense(p["ffn_1"], h))
    delta = np.linspace(np.log(1e-2) / 1.5, np.log(1e-2) / 0.3, channels)
    return (h @ p["ffn_out"]["kernel"]) * np.exp(-t * np.abs(delta))


def _np_hyena(p, x, mask, emb_dim):
    u = _causal_conv(_zero(_dense(p["in_proj"], x), mask), p["short_taps"]) + p["short_bias"]
    g0, g1, v = np.split(u, 3, axis=-1)
    z = _zero(g1 * v, mask)
    h = _np_filter(p["filter"], D, L, MAX_LENGTH, emb_dim)
    return _dense(p["out_proj"], g0 * (_causal_conv(z, h) + p["filter_bias"][0] * z))


def _np_base_conv(p, x, mask, long_conv=True):
    u = _zero(x, mask)
    c = _causal_conv(u, p["short_taps"]) + p["short_bias"]
    if long_conv:
        c = _zero(c, mask)
        c = _causal_conv(c, _np_filter(p["filter"], D, L, MAX_LENGTH, 3)) + c
    return _dense(p["projection"], x) * c + u


# ------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("causal", [True, False])
def test_s4d_fft_equals_direct_convolution_and_recurrence(causal):
    module = _module("s4d")
    x, mask = _x(), _mask()
    params = _params(module, causal)
    out, _ = _apply(module, params, x, mask, causal)
    _close(out, _np_s4d(params, x, mask, causal))
    if causal:  # the recurrence: same outputs, its state = N real numbers per channel
        recurrent = _module("s4d", **attention.get("s4d").recurrent_settings)
        step, state = _apply(recurrent, params, x, mask, True)
        _close(step, out)
        assert _counted_state(state) == recurrent.state_size(D) == 4 * D
        # the final state is Σ_j Ā^(L-1-j) u_j per channel and mode
        p = params["ssm"]
        a_bar = np.exp(np.exp(p["log_dt"])[:, None] * (-np.exp(p["log_neg_re"]) + 1j * p["imag"]))
        u = _zero(x, mask)
        final = sum(a_bar ** (L - 1 - j) * u[:, j, :, None] for j in range(L))  # [B, C, M]
        s = state["intermediates"]["recurrent_state"][0]
        _close(s[..., 0] + 1j * s[..., 1], final)


def test_h3_fft_and_recurrent_equal_direct_formula():
    module = _module("h3")
    x, mask = _x(), _mask()
    params = _params(module, True)
    ref = _np_h3(params, x, mask, module.head_dim)
    out, sown = _apply(module, params, x, mask, True)
    _close(out, ref)
    assert not sown
    recurrent = _module("h3", **attention.get("h3").recurrent_settings)
    step, state = _apply(recurrent, params, x, mask, True)
    _close(step, ref)
    # shift buffer (S - 1) · d plus d · e · N for the kv modes: 2·8 + 8·2·4
    assert _counted_state(state) == recurrent.state_size(D) == 2 * D + D * 2 * 4
    # the shift taps may outnumber the tokens (Zoology: S = N = L); still the same formula
    wide = _module("h3", shift_dim=L + 3)
    params = _params(wide, True)
    _close(_apply(wide, params, x, mask, True)[0], _np_h3(params, x, mask, wide.head_dim))


def test_hyena_fft_equals_direct_formula():
    module = _module("hyena")
    x, mask = _x(), _mask()
    params = _params(module, True)
    out, sown = _apply(module, params, x, mask, True)
    _close(out, _np_hyena(params, x, mask, module.filter_emb_dim))
    assert not sown and module.state_size(D) is None
    assert attention.get("hyena").recurrent_settings is None


def test_base_conv_equals_direct_formula_and_short_recurrence():
    module = _module("base_conv")
    x, mask = _x(), _mask()
    params = _params(module, True)
    _close(_apply(module, params, x, mask, True)[0], _np_base_conv(params, x, mask))
    assert module.state_size(D) is None
    short = _module("base_conv", long_conv=False)
    params = {k: v for k, v in params.items() if k != "filter"}
    ref = _np_base_conv(params, x, mask, long_conv=False)
    _close(_apply(short, params, x, mask, True)[0], ref)
    recurrent = _module("base_conv", long_conv=False, mode="recurrent")
    step, state = _apply(recurrent, params, x, mask, True)
    _close(step, ref)
    assert _counted_state(state) == recurrent.state_size(D) == 2 * D
    with pytest.raises(ValueError, match="long_conv=False"):
        _apply(_module("base_conv", mode="recurrent"), params, x, mask, True)


@pytest.mark.parametrize("name, causal", [("s4d", True), ("s4d", False), ("h3", True),
                                          ("hyena", True), ("base_conv", True)])
def test_padding_at_the_ends_is_invisible(name, causal):
    """Row 1 is padded at both ends: its real positions equal the real tokens run alone (the
    filters are shift-invariant and padded inputs are zeros)."""
    module = _module(name)
    x, mask = _x(), _mask()
    params = _params(module, causal)
    out, _ = _apply(module, params, x, mask, causal)
    real = np.flatnonzero(mask[1])
    alone, _ = _apply(module, params, x[:, real], None, causal)
    _close(out[1, real], alone[1])


def test_study_line_ups_name_valid_settings():
    """Settings of the study line-ups are valid for their variants. rwkv6 and mamba come from
    another branch: checked once they exist here."""
    from attnjax.studies import lra_variants, zoology_variants

    assert "s4d" in lra_variants(64)
    line_up = zoology_variants(65)
    assert list(line_up) == ["softmax", "base_conv", "hyena", "h3", "rwkv6", "based", "mamba"]
    assert line_up["h3"]["state_dim"] % 2 == 0
    for name, settings in line_up.items():
        if name in attention.names():
            attention.check_options(name, settings)
