"""Low-rank / kernel / synthetic attentions (performer, cosformer, linformer, nystromformer,
synthesizer_dense, synthesizer_random) against independent float64 NumPy formulas.

The contract (shapes, leaks, padding, GQA, capabilities) is in test_attention.py."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention.performer import orthogonal_features

B, L, H, D = 2, 13, 4, 8


def _inputs(seed=0, lq=L, lk=L, kv_heads=H, qk_scale=1.0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, lq, H, D)) * qk_scale
    k = rng.standard_normal((B, lk, kv_heads, D)) * qk_scale
    v = rng.standard_normal((B, lk, kv_heads, D))
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _smooth_inputs(seed=0):
    """q, k varying slowly along the sequence (segment means are then good landmarks)."""
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, :, None, None]
    freq, phase = rng.uniform(0.05, 0.25, (2, 1, 1, H, D)), rng.uniform(0, 6.3, (2, B, 1, H, D))
    q, k = (1.5 * np.sin(freq[i] * t + phase[i]) for i in range(2))
    v = rng.standard_normal((B, L, H, D))
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _key_mask(lk=L):
    """Row 0: last 3 keys padded; row 1: first and last 4 padded (causal query 0 sees nothing)."""
    mask = np.ones((B, lk), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -4:] = False
    return jnp.asarray(mask)


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _init(module, q, k, v, mask=None, causal=False):
    return module.init(jax.random.key(0), q, k, v, mask=mask, causal=causal)


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _apply(module, variables, q, k, v, mask=None, causal=False):
    return module.apply(variables, q, k, v, mask=mask, causal=causal)


def _run(name, q, k, v, mask=None, causal=False, variables=None, **settings):
    """(output, variables) of the named variant, jitted: one compile per settings and shapes,
    so the tests share settings where they can. `variables` given (e.g. {} for a variant without
    parameters, or a hand-made tree: apply checks names and shapes) skips `init`."""
    module = attention.create(name, **settings)
    if variables is None:
        variables = _init(module, q, k, v, mask, causal)
    return _apply(module, variables, q, k, v, mask, causal), variables


def _params(**shapes):
    """{"params": {name: standard normal array}} for hand-made parameters."""
    rng = np.random.default_rng(0)
    return {"params": {n: jnp.asarray(rng.standard_normal(s), jnp.float32)
                       for n, s in shapes.items()}}


# ------------------------------------------------------------------ float64 references


def _f64(*xs):
    return tuple(np.asarray(x, np.float64) for x in xs)


def _repeat(x, heads=H):
    return np.repeat(np.asarray(x, np.float64), heads // x.shape[2], axis=2)


def _allowed(mask, causal, lq, lk):
    """[B or 1, 1, Lq, Lk] bool: key j visible to query i."""
    ok = np.ones((1, lq, lk), bool) if mask is None else np.asarray(mask)[:, None, :]
    if causal:
        ok = ok & (np.arange(lk)[None, :] <= np.arange(lq)[:, None])
    return ok[:, None]


def _ratio(scores, v, eps=0.0):
    """Σ_j s_ij v_j / (Σ_j s_ij + eps); scores [B, H, Lq, Lk] >= 0, v [B, Lk, H, E]; 0 if blind."""
    num = np.einsum("bhqk,bkhe->bqhe", scores, v)
    den = scores.sum(-1).transpose(0, 2, 1)[..., None] + eps  # [B, Lq, H, 1]
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _softmax(logits, ok):
    """Masked softmax in float64; rows with no visible entry give zeros."""
    logits = np.where(ok, logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0))
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def _np_softmax_attention(q, k, v, mask=None, causal=False):
    q, k, v = (*_f64(q), _repeat(k), _repeat(v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    w = _softmax(logits, _allowed(mask, causal, q.shape[1], k.shape[1]))
    return np.einsum("bhqk,bkhe->bqhe", w, v)


def _np_performer(q, k, v, w, mask, causal):
    """FAVOR+ in float64, quadratic form: φ(x) = exp(W x - ‖x‖²/2)/√m, x = d^(-1/4) x."""
    q, k, v, w = (*_f64(q), _repeat(k), _repeat(v), *_f64(w))

    def phi(x):
        x = x * x.shape[-1] ** -0.25
        return np.exp(x @ w.T - 0.5 * (x * x).sum(-1, keepdims=True)) / np.sqrt(w.shape[0])

    scores = np.einsum("bqhm,bkhm->bhqk", phi(q), phi(k))
    return _ratio(scores * _allowed(mask, causal, q.shape[1], k.shape[1]), v)


def _np_cosformer(q, k, v, mask, causal, m, eps=1e-6):
    q, k, v = (*_f64(q), _repeat(k), _repeat(v))
    i, j = np.arange(q.shape[1])[:, None], np.arange(k.shape[1])[None, :]
    relu = lambda x: np.maximum(x, 0)
    scores = np.einsum("bqhd,bkhd->bhqk", relu(q), relu(k)) * np.cos(np.pi / 2 * (i - j) / m)
    return _ratio(scores * _allowed(mask, causal, q.shape[1], k.shape[1]), v, eps)


def _np_nystrom(q, k, v, mask, m, iterations=None):
    """F A⁺ B V in float64 with masked segment-mean landmarks; A⁺ by the paper's iteration
    (`iterations` steps) or, if None, np.linalg.pinv."""
    q, k, v = (*_f64(q), _repeat(k), _repeat(v))
    length, d = q.shape[1], q.shape[-1]
    real = np.ones((B, length), bool) if mask is None else np.asarray(mask)
    q, k, v = (x * real[:, :, None, None] for x in (q, k, v))
    member = (np.arange(length) * m // length == np.arange(m)[:, None])[None] & real[:, None]
    count = member.sum(-1)  # [B, m]
    means = member / np.maximum(count, 1)[..., None]  # [B, m, L]
    ql, kl = (np.einsum("bml,blhd->bmhd", means, x) for x in (q, k))
    valid = count > 0

    def soft(x, y, ok):
        return _softmax(np.einsum("bqhd,bkhd->bhqk", x, y) / np.sqrt(d), ok)

    f = soft(q, kl, valid[:, None, None, :])
    a = soft(ql, kl, (valid[:, :, None] & valid[:, None, :])[:, None])
    b = soft(ql, k, (valid[:, :, None] & real[:, None, :])[:, None])
    if iterations is None:
        z = np.linalg.pinv(a)
    else:
        norm = np.abs(a).sum(-2).max(-1) * np.abs(a).sum(-1).max(-1)
        z = np.swapaxes(a, -1, -2) / np.where(norm > 0, norm, 1)[..., None, None]
        eye = np.eye(m)
        for _ in range(iterations):
            az = a @ z
            z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return np.einsum("bhqm,bhmn,bhnk,bkhe->bqhe", f, z, b, v)


# ------------------------------------------------------------------ performer


def test_orthogonal_features_are_seeded_orthogonal_blocks_with_chi_norms():
    w = orthogonal_features(3, 20, D)  # two full blocks of 8 and a truncated one of 4
    assert w.shape == (20, D) and w.dtype == np.float32 and not w.flags.writeable
    np.testing.assert_array_equal(w, orthogonal_features(3, 20, D))
    assert not np.allclose(w, orthogonal_features(4, 20, D))
    norms = np.linalg.norm(w, axis=1)
    for block in (w[:8], w[8:16], w[16:]):
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-5)
    assert norms.std() > 0.1  # chi-distributed norms, not all √d
    # chi(d) norms: E‖w‖² = d (loose check over many rows)
    assert abs(np.mean(np.linalg.norm(orthogonal_features(0, 4096, D), axis=1) ** 2) - D) < 0.5


def test_performer_approaches_softmax_as_features_grow():
    q, k, v = _inputs(0, qk_scale=0.5)  # 2 x 4 independent (sequence, head) pairs
    ref = _np_softmax_attention(q, k, v)
    errors = {}
    for m in (16, 256, 1024):
        outs = [attention.create("performer", num_features=m, seed=s).apply({}, q, k, v)
                for s in range(2)]  # eager: few ops, compiled once per m
        errors[m] = float(np.mean([np.abs(out - ref).mean() for out in outs]))
    assert errors[16] > errors[256] > errors[1024], errors
    assert errors[1024] < 0.5 * errors[16], errors


PERFORMER = {"num_features": 12, "chunk_size": 5}  # the settings both performer tests share


def test_performer_matches_its_float64_formula():
    q, k, v = _inputs(1, kv_heads=H // 2)
    mask = _key_mask()
    w = orthogonal_features(0, 12, D)  # the variant's features at num_features=12, seed 0
    tol = {"rtol": 1e-5, "atol": 1e-5}
    for chunk in (1, 5):  # 13 chunks (only the inter-chunk state), 3 chunks (both parts)
        settings = {**PERFORMER, "chunk_size": chunk}
        out, _ = _run("performer", q, k, v, mask, True, {}, **settings)
        ref = _np_performer(q, k, v, w, mask, causal=True)
        np.testing.assert_allclose(out, ref, **tol, err_msg=f"chunk {chunk}")
    out, _ = _run("performer", q, k, v, mask, False, {}, **PERFORMER)
    np.testing.assert_allclose(out, _np_performer(q, k, v, w, mask, causal=False), **tol)
    q5 = q[:, :5]  # cross attention
    out, _ = _run("performer", q5, k, v, mask, False, {}, **PERFORMER)
    np.testing.assert_allclose(out, _np_performer(q5, k, v, w, mask, causal=False), **tol)


def test_performer_stabiliser_survives_float32_underflow():
    """Large q, k: exp(W x - ‖x‖²/2) of some keys is below float32's range for every feature,
    yet the stabilised features (shifted by the running max over the keys each query sees)
    match the float64 formula."""
    q, k, v = _inputs(2, kv_heads=H // 2, qk_scale=8.0)
    mask = _key_mask()
    w = orthogonal_features(0, 12, D)
    x = np.asarray(k, np.float64) * D**-0.25
    raw = x @ w.T.astype(np.float64) - 0.5 * (x * x).sum(-1, keepdims=True)  # log features
    assert (np.exp(raw.astype(np.float32)).max(-1) == 0).mean() > 0.1  # unstabilised: all 0
    for causal in (False, True):
        out, _ = _run("performer", q, k, v, mask, causal, {}, **PERFORMER)
        assert np.isfinite(np.asarray(out)).all()
        ref = _np_performer(q, k, v, w, mask, causal)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_performer_declares_its_state():
    module = attention.create("performer", num_features=32)
    assert module.state_size(D) == 32 * D + 32
    assert module.flops(L, L, D) < attention.create("performer", num_features=64).flops(L, L, D)


# ------------------------------------------------------------------ cosformer


def test_cosformer_matches_float64_formula():
    q, k, v = _inputs(2, kv_heads=H // 2)
    mask = _key_mask()
    tol = {"rtol": 1e-5, "atol": 1e-5}
    # chunks of 1: only the inter-chunk prefix; of 5: both parts. reweight_length 40: a fixed M
    for causal, chunk, reweight in ((True, 1, 0), (True, 5, 40), (False, 5, 0)):
        settings = {"chunk_size": chunk, "reweight_length": reweight}
        out, _ = _run("cosformer", q, k, v, mask, causal, {}, **settings)
        ref = _np_cosformer(q, k, v, mask, causal, m=reweight or L)
        np.testing.assert_allclose(out, ref, **tol, err_msg=f"{causal, chunk, reweight}")
    q5 = q[:, :5]  # cross attention: M = max(Lq, Lk)
    out, _ = _run("cosformer", q5, k, v, mask, False, {}, chunk_size=5)
    np.testing.assert_allclose(out, _np_cosformer(q5, k, v, mask, False, m=L), **tol)
    with pytest.raises(ValueError, match="reweight_length"):
        _run("cosformer", q, k, v, None, False, {}, reweight_length=L - 1)
    assert attention.create("cosformer").state_size(D) == 2 * D * D + 2 * D


# ------------------------------------------------------------------ linformer


def test_linformer_matches_float64_formula():
    q, k, v = _inputs(4, kv_heads=H // 2)
    mask = _key_mask()
    variables = _params(key_projection=(6, 20), value_projection=(6, 20))
    e, f = (np.asarray(x, np.float64)[:, :L] for x in variables["params"].values())
    for lq, m in ((L, None), (L, mask), (5, mask)):  # self, padded, cross attention
        out, _ = _run("linformer", q[:, :lq], k, v, m, False, variables, proj_dim=6, max_length=20)
        real = 1.0 if m is None else np.asarray(m, np.float64)[:, :, None, None]
        qq, kk, vv = _f64(q[:, :lq])[0], _repeat(k) * real, _repeat(v) * real
        kp, vp = np.einsum("pk,bkhd->bphd", e, kk), np.einsum("pk,bkhd->bphd", f, vv)
        w = _softmax(np.einsum("bqhd,bphd->bhqp", qq, kp) / np.sqrt(D), True)
        np.testing.assert_allclose(out, np.einsum("bhqp,bphe->bqhe", w, vp), atol=1e-5)


def test_length_sized_variants_need_max_length():
    q, k, v = _inputs()
    for name in ("linformer", "synthesizer_dense", "synthesizer_random"):
        with pytest.raises(ValueError, match="needs max_length"):
            jax.eval_shape(attention.create(name).init, jax.random.key(0), q, k, v)
        with pytest.raises(ValueError, match="exceeds max_length"):
            jax.eval_shape(attention.create(name, max_length=L - 1).init, jax.random.key(0),
                           q, k, v)


# ------------------------------------------------------------------ nystromformer


def test_nystromformer_with_one_landmark_per_token_is_softmax():
    q, k, v = _inputs(5)
    mask = _key_mask()
    real = np.asarray(mask)  # outputs at padded query positions are not compared
    # enough iterations for A⁺ to converge: F A⁺ B = S S⁻¹ S = S. (The paper's 6 iterations
    # leave an error of about 0.02 here: A is not well conditioned at one token per landmark.)
    for m, keep in ((None, slice(None)), (mask, real)):
        out, _ = _run("nystromformer", q, k, v, m, False, {}, num_landmarks=L, pinv_iterations=20)
        ref = _np_softmax_attention(q, k, v, m)
        np.testing.assert_allclose(np.asarray(out)[keep], ref[keep], atol=2e-4)


def test_nystromformer_matches_float64_formula():
    mask = _key_mask()
    for m, kv_heads in ((None, H), (mask, H // 2)):
        q, k, v = _inputs(6, kv_heads=kv_heads)
        out, _ = _run("nystromformer", q, k, v, m, False, {}, num_landmarks=4)
        np.testing.assert_allclose(out, _np_nystrom(q, k, v, m, 4, iterations=6), atol=1e-4)
    # landmarks are masked means of the queries too: padded tokens' queries change no real output
    q2 = jnp.where(mask[:, :, None, None], q, 10 * _inputs(11)[0])
    out2, _ = _run("nystromformer", q2, k, v, mask, False, {}, num_landmarks=4)
    real = np.asarray(mask)
    np.testing.assert_array_equal(np.asarray(out2)[real], np.asarray(out)[real])


def test_nystromformer_few_landmarks_moderate_error_on_smooth_inputs():
    q, k, v = _smooth_inputs()
    ref = _np_softmax_attention(q, k, v)
    baseline = np.abs(np.asarray(v, np.float64).mean(1, keepdims=True) - ref).mean()  # uniform
    out, _ = _run("nystromformer", q, k, v, None, False, {}, num_landmarks=4)
    error = np.abs(out - ref).mean()
    assert error < 0.1 * baseline, (error, baseline)
    # converged A⁺ = the float64 Nyström formula with the exact pseudo-inverse
    out, _ = _run("nystromformer", q, k, v, None, False, {}, num_landmarks=4, pinv_iterations=30)
    np.testing.assert_allclose(out, _np_nystrom(q, k, v, None, 4), atol=2e-4)


def test_nystromformer_conv_skip_is_a_depthwise_convolution_of_v():
    q, k, v = _inputs(7)
    mask = _key_mask()
    variables = _params(conv=(3, H))
    out, _ = _run("nystromformer", q, k, v, mask, False, variables, num_landmarks=4,
                  conv_kernel=3)
    kernel = np.asarray(variables["params"]["conv"], np.float64)  # [3, H]
    vv = _f64(v)[0] * np.asarray(mask)[:, :, None, None]
    vp = np.pad(vv, [(0, 0), (1, 1), (0, 0), (0, 0)])
    skip = sum(kernel[t][:, None] * vp[:, t : t + L] for t in range(3))
    ref = _np_nystrom(q, k, v, mask, 4, iterations=6) + skip
    np.testing.assert_allclose(out, ref, atol=1e-4)


# ------------------------------------------------------------------ synthesizers


def test_synthesizer_random_zero_logits_are_uniform_over_visible_keys():
    q, k, v = _inputs(8, kv_heads=H // 2)
    mask = _key_mask()
    table = _params(logits=(H, 16, 16))
    zero = jax.tree.map(jnp.zeros_like, table)
    for causal in (False, True):
        ok = np.broadcast_to(_allowed(mask, causal, L, L), (B, H, L, L))
        out, _ = _run("synthesizer_random", q, k, v, mask, causal, zero, max_length=16)
        np.testing.assert_allclose(out, _ratio(ok.astype(np.float64), _repeat(v)), atol=1e-6)
        # and with a random table: softmax of the table's top-left [L, L] corner
        out, _ = _run("synthesizer_random", q, k, v, mask, causal, table, max_length=16)
        logits = np.asarray(table["params"]["logits"], np.float64)[None, :, :L, :L]
        ref = np.einsum("bhqk,bkhe->bqhe", _softmax(logits, ok), _repeat(v))
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_synthesizer_random_fixed_table_comes_from_the_seed():
    q, k, v = _inputs(9)
    fixed = {"max_length": 16, "trainable": False}
    shapes = jax.eval_shape(attention.create("synthesizer_random", **fixed).init,
                            jax.random.key(0), q, k, v)
    assert not jax.tree.leaves(shapes)  # no parameters: nothing trains or decays
    modules = [attention.create("synthesizer_random", seed=s, **fixed) for s in (0, 0, 1)]
    outs = [module.apply({}, q, k, v) for module in modules]  # eager: one compile of the rng
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], outs[2])


def test_synthesizer_dense_matches_float64_formula():
    q, k, v = _inputs(10, kv_heads=H // 2)
    mask = _key_mask()
    variables = _params(w1=(H, D, 5), b1=(H, 5), w2=(H, 5, 16), b2=(H, 16))
    p = {n: np.asarray(x, np.float64) for n, x in variables["params"].items()}
    hidden = np.maximum(np.einsum("bqhd,hdf->bhqf", _f64(q)[0], p["w1"]) + p["b1"][:, None], 0)
    logits = np.einsum("bhqf,hfk->bhqk", hidden, p["w2"][:, :, :L]) + p["b2"][:, None, :L]
    for causal in (False, True):
        out, _ = _run("synthesizer_dense", q, k, v, mask, causal, variables, max_length=16,
                      hidden_dim=5)
        w = _softmax(logits, _allowed(mask, causal, L, L))
        np.testing.assert_allclose(out, np.einsum("bhqk,bkhe->bqhe", w, _repeat(v)), atol=1e-5)


def test_length_sized_parameters_have_the_documented_shapes():
    q, k, v = _inputs()
    for name, settings, expected in (
        ("linformer", {"proj_dim": 6}, {"key_projection": (6, 20), "value_projection": (6, 20)}),
        ("synthesizer_dense", {}, {"w1": (H, D, D), "b1": (H, D), "w2": (H, D, 20),
                                   "b2": (H, 20)}),
        ("synthesizer_random", {}, {"logits": (H, 20, 20)}),
    ):
        module = attention.create(name, max_length=20, **settings)
        shapes = jax.eval_shape(module.init, jax.random.key(0), q, k, v)["params"]
        assert {n: x.shape for n, x in shapes.items()} == expected, name
