"""State-space and RWKV mixers (mamba, mamba2, rwkv6): both forms of each block against a
float64 NumPy loop written from the paper's equations, with random parameters and padding."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention

B, L, D = 2, 13, 8


def _x(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, L, D)), jnp.float32)


def _mask():
    mask = np.ones((B, L), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return jnp.asarray(mask)


def _params(module, x, mask, scale=0.3):
    """The module's initial parameters plus noise (no gate or bias sits at a special value)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x, mask=mask, causal=True))
    variables = jax.jit(lambda: module.init(jax.random.key(0), x, mask=mask, causal=True))()
    rng = np.random.default_rng(3)
    return {"params": jax.tree.map(
        lambda p, s: p + jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
        variables["params"], shapes["params"])}


@functools.partial(jax.jit, static_argnames="module")
def _apply(module, variables, x, mask):
    return module.apply(variables, x, mask=mask, causal=True)


def _np_params(variables):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])


def _silu(a):
    return a / (1 + np.exp(-a))


def _softplus(a):
    return np.log1p(np.exp(a))


def _np_conv(x, kernel, bias):
    """Causal depthwise conv: out_t = bias + Σ_i kernel[i] · x_{t - W + 1 + i} ([L, C])."""
    width, out = kernel.shape[0], np.zeros_like(x) + bias
    for t in range(x.shape[0]):
        for i in range(width):
            if t - width + 1 + i >= 0:
                out[t] += kernel[i] * x[t - width + 1 + i]
    return out


def _np_mamba(p, x, real):
    """Gu & Dao 2023, algorithm 2 in the Mamba block, one sequence x [L, d]."""
    e = p["in_proj"]["kernel"].shape[1] // 2
    xz = x @ p["in_proj"]["kernel"]
    xs, z = xz[:, :e] * real[:, None], xz[:, e:]
    xs = _silu(_np_conv(xs, p["conv_kernel"], p["conv_bias"]))
    n = p["A_log"].shape[1]
    dbc = xs @ p["x_proj"]["kernel"]
    r = dbc.shape[1] - 2 * n
    dt = _softplus(dbc[:, :r] @ p["dt_proj"]["kernel"] + p["dt_proj"]["bias"]) * real[:, None]
    b_in, c_out = dbc[:, r : r + n], dbc[:, r + n :]
    a = -np.exp(p["A_log"])  # [E, N]
    h, y = np.zeros((e, n)), np.zeros((len(x), e))
    for t in range(len(x)):
        h = np.exp(dt[t][:, None] * a) * h + (dt[t] * xs[t])[:, None] * b_in[t][None, :]
        y[t] = h @ c_out[t] + p["D"] * xs[t]
    return (y * _silu(z)) @ p["out_proj"]["kernel"]


def _np_mamba2(p, x, real, head_dim, n, eps=1e-5):
    """Dao & Gu 2024, the Mamba-2 block (one group of B, C), one sequence x [L, d]."""
    heads = p["A_log"].shape[0]
    e = heads * head_dim
    proj = x @ p["in_proj"]["kernel"]
    z, xbc, delta = proj[:, :e], proj[:, e : 2 * e + 2 * n], proj[:, 2 * e + 2 * n :]
    dt = _softplus(delta + p["dt_bias"]) * real[:, None]  # [L, H]
    xbc = _silu(_np_conv(xbc * real[:, None], p["conv_kernel"], p["conv_bias"]))
    xs = xbc[:, :e].reshape(len(x), heads, head_dim)
    b_in, c_out = xbc[:, e : e + n], xbc[:, e + n :]
    a = -np.exp(p["A_log"])
    h, y = np.zeros((heads, head_dim, n)), np.zeros((len(x), heads, head_dim))
    for t in range(len(x)):  # h_t = exp(Δ A) h + Δ x_t B_tᵀ;  y_t = h_t C_t + D x_t
        h = np.exp(dt[t] * a)[:, None, None] * h + dt[t][:, None, None] * (
            xs[t][:, :, None] * b_in[t][None, None, :])
        y[t] = h @ c_out[t] + p["D"][:, None] * xs[t]
    y = y.reshape(len(x), e) * _silu(z)
    y = y / np.sqrt((y * y).mean(-1, keepdims=True) + eps) * p["norm_scale"]
    return y @ p["out_proj"]["kernel"]


def _np_rwkv6(p, x, real, head_dim):
    """Peng et al. 2024, Finch time mixing, one sequence x [L, d]."""
    length, d = x.shape
    heads = d // head_dim
    x = x * real[:, None]
    prev = np.concatenate([np.zeros((1, d)), x[:-1]])
    delta = prev - x
    lora = np.tanh((x + delta * p["mix_x"]) @ p["mix_down"]).reshape(length, 5, -1)
    mixes = p["mix"] + np.einsum("lmr,mrd->lmd", lora, p["mix_up"])
    xw, xk, xv, xr, xg = (x + delta * mixes[:, i] for i in range(5))
    r, k, v = (xi @ p[n]["kernel"] for n, xi in (("receptance", xr), ("key", xk), ("value", xv)))
    k, v = k * real[:, None], v * real[:, None]
    g = _silu(xg @ p["gate"]["kernel"])
    w = np.exp(-np.exp(p["decay_base"] + np.tanh(xw @ p["decay_down"]) @ p["decay_up"]))
    w = np.where(real[:, None] > 0, w, 1.0)
    u = p["bonus"].reshape(d)
    out = np.zeros((length, d))
    for h in range(heads):  # wkv_t = diag(u) k_tᵀ v_t + Σ_{i<t} diag(Π_{i<j<t} w_j) k_iᵀ v_i
        c = slice(h * head_dim, (h + 1) * head_dim)
        for t in range(length):
            wkv = (u[c] * k[t, c])[:, None] * v[t, c][None, :]
            for i in range(t):
                keep = np.prod(w[i + 1 : t, c], axis=0)  # [P] (1 when i = t - 1)
                wkv = wkv + (keep * k[i, c])[:, None] * v[i, c][None, :]
            out[t, c] = r[t, c] @ wkv
    o = out.reshape(length, heads, head_dim)
    o = (o - o.mean(-1, keepdims=True)) / np.sqrt(o.var(-1, keepdims=True) + 64e-5)
    o = o.reshape(length, d) * p["norm_scale"] + p["norm_bias"]
    return (o * g) @ p["output"]["kernel"]


def _reference(name, p, module, x, real):
    if name == "mamba":
        return _np_mamba(p, x, real)
    if name == "mamba2":
        return _np_mamba2(p, x, real, module.head_dim, module.d_state)
    return _np_rwkv6(p, x, real, module.head_dim)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "rwkv6"])
def test_both_forms_match_the_paper(name):
    cls = attention.get(name)
    x, mask = _x(), _mask()
    forms = [attention.create(name, **cls.small_settings),
             attention.create(name, **{**cls.small_settings, **cls.recurrent_settings})]
    variables = _params(forms[0], x, mask)
    p, real = _np_params(variables), np.asarray(mask, np.float64)
    ref = np.stack([_reference(name, p, forms[0], np.asarray(x[b], np.float64), real[b])
                    for b in range(B)])
    keep = np.asarray(mask)[..., None]
    for module in forms:
        out = np.asarray(_apply(module, variables, x, mask), np.float64)
        np.testing.assert_allclose(np.where(keep, out, 0), np.where(keep, ref, 0), rtol=1e-4,
                                   atol=1e-4 * np.abs(ref).max(), err_msg=module.mode)
