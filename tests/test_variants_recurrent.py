"""Linear recurrences (retention, gla, deltanet, based, gated_deltanet, mlstm): the chunked or
parallel training form equals the token-by-token recurrent form, and both equal a float64 NumPy
recurrence written here in each paper's own form; plus each paper's defining property
(retention's parallel form, the delta rule's exact storage, GLA without forgetting, Based's
window as softmax)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention

B, L, H, KV, D = 3, 13, 4, 2, 8  # GQA: 2 kv heads serve 4 query heads
CHUNKS = (1, 3, 8, L, L + 5)  # 3 and 8 do not divide L = 13


def _inputs(seed=0, length=L):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, length, H, D))
    k = rng.standard_normal((B, length, KV, D))
    v = rng.standard_normal((B, length, KV, D))
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _key_mask():
    """Row 0: last 3 keys padded; row 1: first and last 5 (query 0 sees nothing); row 2: none."""
    mask = np.ones((B, L), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return jnp.asarray(mask)


def _params(module, q, k, v, mask, causal, seed=0):
    """Random parameters (not the initialisers': e.g. GroupNorm scales != 1), shaped by
    `jax.eval_shape` of the module's init, so nothing is compiled."""
    shapes = jax.eval_shape(functools.partial(module.init, mask=mask, causal=causal),
                            jax.random.key(0), q, k, v)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(0.5 * rng.standard_normal(x.shape), x.dtype),
                        shapes)


# These tests are dominated by XLA compiles (one per variant, mode and chunk size); the CPU
# backend's cheapest optimisation level halves that time and changes nothing being tested.
@functools.partial(jax.jit, static_argnames=("module", "causal"), compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
def _apply(module, variables, q, k, v, mask, causal):
    return module.apply(variables, q, k, v, mask=mask, causal=causal)


def _close(out, ref, tol=1e-5):
    ref = np.asarray(ref, np.float64)
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, rtol=tol,
                               atol=tol * np.abs(ref).max())


def _np(*xs):
    """float64 copies, k / v repeated to the query heads."""
    q, k, v = (np.asarray(x, np.float64) for x in xs)
    return q, np.repeat(k, H // KV, axis=2), np.repeat(v, H // KV, axis=2)


def _np_real(mask, length=L):
    return np.ones((B, length)) if mask is None else np.asarray(mask, np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------- float64 NumPy recurrences


def _np_decay_recurrence(q, k, v, alpha, strict=False):
    """S_t = diag(α_t) S_{t-1} + k_tᵀ v_t; o_t = q_t S_t (strict: q_t diag(α_t) S_{t-1})."""
    out = np.zeros(v.shape)
    state = np.zeros((q.shape[0], q.shape[2], q.shape[3], v.shape[3]))  # [B, H, Dk, Dv]
    for t in range(q.shape[1]):
        state = alpha[:, t, :, :, None] * state
        if strict:
            out[:, t] = np.einsum("bhd,bhde->bhe", q[:, t], state)
        state = state + k[:, t, :, :, None] * v[:, t, :, None, :]
        if not strict:
            out[:, t] = np.einsum("bhd,bhde->bhe", q[:, t], state)
    return out


def _np_group_norm(x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)


def _np_gammas():
    return 1.0 - 2.0 ** (-5.0 - np.arange(H))


def _np_retention(params, q, k, v, mask, causal=True, group_norm=True):
    q, k, v = _np(q, k, v)
    real = _np_real(mask)[:, :, None, None]
    k, v = k * real / np.sqrt(D), v * real
    gamma = _np_gammas()
    if causal:
        alpha = np.broadcast_to(gamma[None, None, :, None], q.shape)
        out = _np_decay_recurrence(q, k, v, alpha)
    else:  # the symmetric decay, as a direct double sum
        dist = np.abs(np.arange(L)[:, None] - np.arange(L)[None, :])  # [L, L]
        decay = gamma[:, None, None] ** dist  # [H, L, L]
        out = np.einsum("bnhd,bmhd,hnm,bmhe->bnhe", q, k, decay, v)
    if not group_norm:
        return out
    return _np_group_norm(out) * np.asarray(params["params"]["group_norm_scale"], np.float64)


def _np_gla(params, q, k, v, mask, causal=True):
    p = params["params"]
    q, k, v = _np(q, k, v)
    real = _np_real(mask)[:, :, None, None]
    w1, w2, b = (np.asarray(p[n], np.float64) for n in ("gate_down", "gate_up", "gate_bias"))
    logits = np.einsum("blhd,hdr->blhr", k, w1)
    logits = np.einsum("blhr,hrc->blhc", logits, w2) + b
    alpha = _sigmoid(logits) ** (1.0 / 16.0)
    alpha = np.where(real > 0, alpha, 1.0)  # padded: no decay
    return _np_decay_recurrence(q / np.sqrt(D), k * real, v * real, alpha)


def _np_deltanet(params, q, k, v, mask, causal=True):
    p = params["params"]
    q, k, v = _np(q, k, v)
    real = _np_real(mask, q.shape[1])
    beta = _sigmoid(np.einsum("blhd,hd->blh", k, p["beta_weight"]) + p["beta_bias"])
    beta = beta * real[..., None]  # padded: no update

    def unit(x):
        return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)

    q, k = unit(q), unit(k)
    out = np.zeros(v.shape)
    state = np.zeros((B, H, D, D))  # [B, H, Dk, Dv]
    for t in range(q.shape[1]):
        k_t, b_t = k[:, t], beta[:, t, :, None]
        error = v[:, t] - np.einsum("bhd,bhde->bhe", k_t, state)  # v_t - k_t S_{t-1}
        state = state + k_t[..., :, None] * (b_t * error)[..., None, :]
        out[:, t] = np.einsum("bhd,bhde->bhe", q[:, t], state)
    return out


def _np_based_linear(params, q, k, v, mask, causal, f_dim):
    """Σ_j K(i, j) v_j / (Σ_j K(i, j) + eps) with the Taylor kernel K = 1 + s + s²/2,
    s = (q W_q)·(k W_k) / √d' (the kernel itself, not the feature map)."""
    p = params["params"]
    q, k, v = _np(q, k, v)
    fq = np.einsum("blhd,hdf->blhf", q, np.asarray(p["q_feature"], np.float64))
    fk = np.einsum("blhd,hdf->blhf", k, np.asarray(p["k_feature"], np.float64))
    s = np.einsum("bihf,bjhf->bhij", fq, fk) / np.sqrt(f_dim)
    kernel = (1 + s + s * s / 2) * _np_real(mask)[:, None, None, :]  # [B, H, L, L]
    if causal:
        kernel = kernel * np.tril(np.ones((L, L)))
    num = np.einsum("bhij,bjhe->bihe", kernel, v)
    return num / (kernel.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)


def _np_window_softmax(q, k, v, mask, causal, window):
    q, k, v = _np(q, k, v)
    i, j = np.arange(L)[:, None], np.arange(L)[None, :]
    band = (i - j >= 0) & (i - j < window) if causal else np.abs(i - j) < window
    ok = band[None, None] & (_np_real(mask) > 0)[:, None, None, :]  # [B, 1, L, L]
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(D)
    e = np.where(ok, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
    total = e.sum(-1, keepdims=True)
    w = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("bhij,bjhe->bihe", w, v)


def _np_based(params, q, k, v, mask, causal=True, f_dim=4, window=4):
    return (_np_based_linear(params, q, k, v, mask, causal, f_dim)
            + _np_window_softmax(q, k, v, mask, causal, window))


REFERENCES = {"retention": _np_retention, "gla": _np_gla, "deltanet": _np_deltanet,
              "based": _np_based}
SETTINGS = {"gla": {"gate_rank": 4}, "based": {"feature_dim": 4, "window_size": 4}}


# ------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_chunked_equals_recurrent_equals_numpy(name):
    q, k, v = _inputs()
    mask = _key_mask()
    settings = SETTINGS.get(name, {})
    recurrent = attention.create(name, mode="recurrent", **settings)
    params = _params(recurrent, q, k, v, mask, True)
    ref = REFERENCES[name](params, q, k, v, mask)
    step = _apply(recurrent, params, q, k, v, mask, True)
    _close(step, ref)
    assert not np.asarray(step)[1, 0].any()
    for chunk in CHUNKS:
        out = _apply(attention.create(name, chunk_size=chunk, **settings), params, q, k, v, mask,
                     True)
        _close(out, ref)
        _close(out, step)
        assert not np.asarray(out)[1, 0].any()  # row 1's query 0 sees no key: exactly 0
    # the recurrent form's padding and causality are exact too (the contract checks 'chunked')
    noise = _inputs(seed=4)
    padded = ~mask[:, :, None, None]
    moved = _apply(recurrent, params, q, jnp.where(padded, noise[1], k),
                   jnp.where(padded, noise[2], v), mask, True)
    np.testing.assert_array_equal(moved, step)
    future = (jnp.arange(L) > 6)[None, :, None, None]
    moved = [jnp.where(future, n, x) for n, x in zip(noise, (q, k, v), strict=True)]
    np.testing.assert_array_equal(_apply(recurrent, params, *moved, mask, True)[:, :7],
                                  step[:, :7])


def test_retention_parallel_chunked_recurrent_agree_both_directions():
    """Raw retention (no GroupNorm, which would hide a wrong overall scale per position)."""
    q, k, v = _inputs()
    mask = _key_mask()
    forms = [attention.create("retention", mode=m, chunk_size=3, group_norm=False)
             for m in ("parallel", "chunked", "recurrent")]
    params = {}
    for causal in (True, False):
        ref = _np_retention(params, q, k, v, mask, causal, group_norm=False)
        outs = [_apply(f, params, q, k, v, mask, causal) for f in forms]
        for out in outs:
            _close(out, ref)
        _close(outs[1], outs[0])  # chunked == parallel
        _close(outs[2], outs[0])  # recurrent == parallel


def test_retention_decays_follow_the_paper():
    from attnjax.attention.retention import head_log_decays

    np.testing.assert_allclose(np.exp(head_log_decays(H)), _np_gammas(), rtol=1e-7)
    assert attention.create("retention").state_size(D) == D * D


def test_deltanet_stores_values_exactly_with_unit_beta_and_orthonormal_keys():
    rng = np.random.default_rng(2)
    keys = np.linalg.qr(rng.standard_normal((D, D)))[0].T  # D orthonormal rows
    k = np.broadcast_to(keys[None, :, None, :], (B, D, KV, D))  # [B, D, KV, D]: key t = row t
    v = rng.standard_normal((B, D, KV, D))
    recall = np.array([rng.integers(0, t + 1) for t in range(D)])  # query t asks for key <= t
    q = np.repeat(k[:, recall], H // KV, axis=2) * 3.0  # any length: q is L2-normalised
    q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
    expected = np.repeat(np.asarray(v)[:, recall], H // KV, axis=2)  # [B, D, H, D]
    for module in (attention.create("deltanet", chunk_size=3),
                   attention.create("deltanet", mode="recurrent")):
        params = {"params": {"beta_weight": jnp.zeros((H, D)), "beta_bias": jnp.full((H,), 100.0)}}
        out = _apply(module, params, q, k, v, None, True)  # β = σ(100) = 1
        np.testing.assert_allclose(out, expected, atol=1e-5)
        _close(out, _np_deltanet(params, q, k, v, None))


def test_gla_without_forgetting_is_unnormalised_linear_attention():
    q, k, v = _inputs()
    mask = _key_mask()
    module = attention.create("gla", chunk_size=3, gate_rank=4)
    params = _params(module, q, k, v, mask, True)
    params = {"params": {n: jnp.zeros_like(x) for n, x in params["params"].items()}}
    params["params"]["gate_bias"] = params["params"]["gate_bias"] + 1e4  # α = σ(1e4) = 1
    nq, nk, nv = _np(q, k, v)
    scores = np.einsum("bihd,bjhd->bhij", nq, nk) / np.sqrt(D)
    scores = scores * np.tril(np.ones((L, L))) * _np_real(mask)[:, None, None, :]
    ref = np.einsum("bhij,bjhe->bihe", scores, nv)  # Σ_{j<=i} (q_i·k_j / √d) v_j
    _close(_apply(module, params, q, k, v, mask, True), ref)
    recurrent = attention.create("gla", mode="recurrent", gate_rank=4)
    _close(_apply(recurrent, params, q, k, v, mask, True), ref)


@pytest.mark.parametrize("causal", [True, False])
def test_based_window_covering_everything_is_softmax(causal):
    q, k, v = _inputs()
    mask = _key_mask()
    wide = attention.create("based", feature_dim=4, window_size=L + 2, chunk_size=3)
    params = _params(wide, q, k, v, mask, causal)
    window_part = _apply(wide, params, q, k, v, mask, causal) - _np_based_linear(
        params, q, k, v, mask, causal, 4)
    softmax = attention.create("softmax")
    _close(window_part, _apply(softmax, {}, q, k, v, mask, causal))
    # and with a band narrower than L (non-causal: |i - j| < w, blocks on both sides)
    narrow = attention.create("based", chunk_size=L + 5, **SETTINGS["based"])  # as above
    out = _apply(narrow, params, q, k, v, mask, causal)
    _close(out, _np_based(params, q, k, v, mask, causal))


def test_based_taylor_features_approximate_exp():
    from attnjax.attention.based import taylor_features

    x, y = (np.random.default_rng(s).standard_normal((5, 6)) * 0.3 for s in (0, 1))
    dot = (taylor_features(jnp.asarray(x)) * taylor_features(jnp.asarray(y))).sum(-1)
    s = (x * y).sum(-1) / np.sqrt(6)
    np.testing.assert_allclose(dot, 1 + s + s * s / 2, rtol=1e-5)
    assert attention.create("based").state_size(D) == (1 + 16 + 256) * (D + 1) + 2 * 64 * D


def _np_unit(x):
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + 1e-6)


def _np_gated_deltanet(params, q, k, v, mask):
    """The paper's column form: S_t = S_{t-1} α_t (I - β_t k_t k_tᵀ) + β_t v_t k_tᵀ [Dv, Dk],
    o_t = S_t q_t."""
    p = {n: np.asarray(x, np.float64) for n, x in params["params"].items()}
    q, k, v = _np(q, k, v)
    real = _np_real(mask)[..., None]  # [B, L, 1]
    beta = _sigmoid(np.einsum("blhd,hd->blh", k, p["beta_weight"]) + p["beta_bias"]) * real
    step = np.log1p(np.exp(np.einsum("blhd,hd->blh", k, p["alpha_weight"]) + p["alpha_bias"]))
    alpha = np.where(real > 0, np.exp(-np.exp(p["alpha_log_rate"]) * step), 1.0)
    q, k, v = _np_unit(q), _np_unit(k) * real[..., None], v * real[..., None]
    out, state = np.zeros(v.shape), np.zeros((B, H, D, D))  # [B, H, Dv, Dk]
    eye = np.eye(D)
    for t in range(L):
        k_t, b_t, a_t = k[:, t], beta[:, t, :, None, None], alpha[:, t, :, None, None]
        keep = a_t * (eye - b_t * k_t[..., :, None] * k_t[..., None, :])  # [B, H, Dk, Dk]
        state = state @ keep + b_t * v[:, t, :, :, None] * k_t[..., None, :]
        out[:, t] = np.einsum("bhed,bhd->bhe", state, q[:, t])
    return out


def test_gated_deltanet_chunked_and_recurrent_match_the_paper():
    q, k, v = _inputs()
    mask = _key_mask()
    recurrent = attention.create("gated_deltanet", mode="recurrent")
    params = _params(recurrent, q, k, v, mask, True)
    ref = _np_gated_deltanet(params, q, k, v, mask)
    _close(_apply(recurrent, params, q, k, v, mask, True), ref)
    for chunk in (3, 8):
        out = _apply(attention.create("gated_deltanet", chunk_size=chunk), params, q, k, v, mask,
                     True)
        _close(out, ref)
        assert not np.asarray(out)[1, 0].any()  # row 1's query 0 sees no key


def _np_mlstm(params, q, k, v, mask, forget_gate):
    """The paper's unstabilised cell (float64 is wide enough here): i = exp(ĩ), f = σ(f̃) or
    exp(f̃), C_t = f C + i v kᵀ, n_t = f n + i k, h = C q / max(|nᵀ q|, 1); per-head LayerNorm."""
    p = {n: np.asarray(x, np.float64) for n, x in params["params"].items()}
    q, k, v = _np(q, k, v)
    pre = np.einsum("blhc,hcg->blhg", np.concatenate([q, k, v], -1), p["gate_weight"])
    i = np.exp(pre[..., 0] + p["input_gate_bias"])  # [B, L, H]
    f_tilde = pre[..., 1] + p["forget_gate_bias"]
    f = _sigmoid(f_tilde) if forget_gate == "sigmoid" else np.exp(f_tilde)
    real = _np_real(mask)[..., None]
    i, f, k = i * real, np.where(real > 0, f, 1.0), k / np.sqrt(D)
    c, n, out = np.zeros((B, H, D, D)), np.zeros((B, H, D)), np.zeros(v.shape)  # C: [Dv, Dk]
    for t in range(L):
        f_t, i_t = f[:, t, :, None], i[:, t, :, None]
        c = f_t[..., None] * c + i_t[..., None] * v[:, t, :, :, None] * k[:, t, :, None, :]
        n = f_t * n + i_t * k[:, t]
        den = np.maximum(np.abs((n * q[:, t]).sum(-1)), 1.0)[..., None]
        out[:, t] = np.einsum("bhed,bhd->bhe", c, q[:, t]) / den
    mean = out.mean(-1, keepdims=True)
    out = (out - mean) / np.sqrt(((out - mean) ** 2).mean(-1, keepdims=True) + 1e-6)
    return out * p["head_norm_scale"]


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_mlstm_parallel_and_recurrent_match_the_paper(forget_gate):
    q, k, v = _inputs()
    mask = _key_mask()
    forms = [attention.create("mlstm", mode=m, forget_gate=forget_gate)
             for m in ("parallel", "recurrent")]
    params = _params(forms[0], q, k, v, mask, True)
    ref = _np_mlstm(params, q, k, v, mask, forget_gate)
    for module in forms:
        out = _apply(module, params, q, k, v, mask, True)
        _close(out, ref, tol=1e-4)  # the per-head LayerNorm amplifies float32 rounding
        assert not np.asarray(out)[1, 0].any()  # row 1's query 0 sees no key: exactly 0
    assert forms[1].state_size(D) == D * D + D + 1


def test_deltanet_chunked_form_has_no_triangular_solve_and_trains(tmp_path):
    """The chunked form once used `lax.linalg.triangular_solve`, whose XLA:CPU kernel waits on
    sub-tasks in the intra-op pool it runs on: with independent solves in flight (2 layers and
    their gradients) every worker waited and a train step never returned (this run hung 2 of 2
    times on 2 cores with that code). Now T is built from matmuls; the run is a subprocess with
    a timeout, so a regression fails instead of hanging the suite."""
    import subprocess

    from tests.conftest import run_python

    module = attention.create("deltanet", chunk_size=4)
    q, k, v = _inputs()
    params = _params(module, q, k, v, None, True)
    grad = jax.grad(lambda q: module.apply(params, q, k, v, causal=True).sum())
    assert "triangular_solve" not in str(jax.make_jaxpr(grad)(q))
    code = f"""
from attnjax import train
from tests.conftest import tiny_config
config = tiny_config(num_train_steps=6, eval_every_steps=6, checkpoint_every_steps=6,
                     num_eval_batches=1, batch_size=64, **{{"model.attention": "deltanet",
                     "model.attention_kwargs.chunk_size": 16, "model.num_layers": 2,
                     "model.d_model": 64, "model.mlp_dim": 64, "task.seq_len": 32}})
summary = train.train_and_evaluate(config, {str(tmp_path)!r})
print(summary["status"], summary["step"])
"""
    try:
        proc = run_python(code, timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("deltanet's chunked train steps stalled (no result in 150 s)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["done", "6"], proc.stdout


@pytest.mark.parametrize("causal", [True, False])
def test_based_without_window_is_the_taylor_linear_attention_alone(causal):
    """window_size=0 (Zoology's figure-2 Based): every form equals the float64 Taylor-kernel
    reference, causally too; its state and FLOPs lose exactly the window's terms."""
    q, k, v = _inputs()
    mask = _key_mask()
    forms = [attention.create("based", feature_dim=4, window_size=0, chunk_size=c)
             for c in (3, L + 5)]
    if causal:
        forms.append(attention.create("based", feature_dim=4, window_size=0, mode="recurrent"))
    params = _params(forms[0], q, k, v, mask, causal)
    ref = _np_based_linear(params, q, k, v, mask, causal, 4)
    outs = [_apply(f, params, q, k, v, mask, causal) for f in forms]
    for out in outs:
        _close(out, ref)
    if causal:  # changing the future changes nothing before it, in every form
        noise = _inputs(seed=4)
        future = (jnp.arange(L) > 6)[None, :, None, None]
        moved = [jnp.where(future, n, x) for n, x in zip(noise, (q, k, v), strict=True)]
        for form, out in zip(forms, outs, strict=True):
            np.testing.assert_array_equal(_apply(form, params, *moved, mask, True)[:, :7],
                                          out[:, :7])
        _, state = forms[-1].apply(params, q, k, v, mask=mask, causal=True,
                                   mutable=["intermediates"])
        assert len(state["intermediates"]["recurrent_state"][0]) == 2  # S and z, no cache
    plain = attention.create("based", feature_dim=4, window_size=0)
    windowed = attention.create("based", feature_dim=4, window_size=4)
    features = 1 + 4 + 16
    assert plain.state_size(D) == features * (D + 1)
    assert windowed.state_size(D) - plain.state_size(D) == 2 * 4 * D
    assert windowed.flops(L, L, D) - plain.flops(L, L, D) == 4.0 * L * 2 * 4 * D
    with pytest.raises(ValueError, match="window_size >= 0"):
        _apply(attention.create("based", window_size=-1), params, q, k, v, mask, causal)
