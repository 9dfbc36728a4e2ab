"""Score / normaliser variants (dot, general, additive, cosine, euclidean, sigmoid, relu,
sparsemax) against float64 NumPy formulas, plus the properties each one is chosen for."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention.sparsemax import entmax15, sparsemax

B, L, H, KV, D = 2, 13, 4, 2, 8  # GQA: 4 query heads share 2 key/value heads
LQ_CROSS = 5


def _inputs(seed=0, lq=L, lk=L):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, lq, H, D))
    k = rng.standard_normal((B, lk, KV, D))
    v = rng.standard_normal((B, lk, KV, D))
    return tuple(jnp.asarray(x, jnp.float32) for x in (q, k, v))


def _key_mask(lk=L):
    """Row 0: last 3 keys padded; row 1: first and last 5 (causal query 0 of row 1 sees none)."""
    mask = np.ones((B, lk), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return jnp.asarray(mask)


def _allowed(mask, causal, lq, lk):
    """[B, 1, Lq, Lk] bool: key j visible to query i."""
    ok = np.asarray(mask)[:, None, None, :] & np.ones((1, 1, lq, lk), bool)
    if causal:
        ok = ok & (np.arange(lk)[None, :] <= np.arange(lq)[:, None])
    return ok


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _init(module, q, k, v, mask, causal):
    return {"params": module.init(jax.random.key(0), q, k, v, mask=mask, causal=causal)
            .get("params", {})}


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _apply(module, variables, q, k, v, mask, bias, causal):
    """(output, recorded weights [B, H, Lq, Lk])."""
    out, state = module.apply(variables, q, k, v, mask=mask, causal=causal, bias=bias,
                              mutable="intermediates")
    return out, state["intermediates"]["attention_weights"][0]


# ------------------------------------------------------------------ float64 NumPy references


def _f64(*xs):
    return tuple(np.asarray(x, np.float64) for x in xs)


def _np_scores(name, q, k, params):
    """[B, H, Lq, Lk] float64 scores; k already repeated to H heads."""
    d = q.shape[-1]
    if name == "dot":
        return np.einsum("bqhd,bkhd->bhqk", q, k)
    if name == "general":
        return np.einsum("bqhd,hde,bkhe->bhqk", q, np.asarray(params["w"], np.float64), k)
    if name == "additive":
        w, u, v = _f64(params["w"], params["u"], params["v"])
        wq, uk = np.einsum("bqhd,hda->bhqa", q, w), np.einsum("bkhd,hda->bhka", k, u)
        return np.einsum("bhqka,ha->bhqk", np.tanh(wq[:, :, :, None] + uk[:, :, None]), v)
    if name == "cosine":
        tau = np.minimum(np.exp(np.asarray(params["log_scale"], np.float64)), 100.0)
        qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
        return np.einsum("bqhd,bkhd->bhqk", qn, kn) * tau[:, None, None]
    if name == "euclidean":  # the differences themselves, not the expanded form
        diff = q.transpose(0, 2, 1, 3)[:, :, :, None] - k.transpose(0, 2, 1, 3)[:, :, None]
        return -np.sum(diff**2, axis=-1) / np.sqrt(d)
    return np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)  # sigmoid, relu, sparsemax


def _np_sparsemax_row(z):
    """Sort-based sparsemax of a 1-D float64 vector."""
    zs = np.sort(z)[::-1]
    cum = np.cumsum(zs)
    ranks = np.arange(1, len(z) + 1)
    k = ranks[1 + ranks * zs > cum][-1]
    return np.maximum(z - (cum[k - 1] - 1) / k, 0.0)


def _np_entmax_bisect_row(z, alpha):
    """alpha-entmax of a 1-D vector by bisection on τ: Σ [(α-1) z - τ]_+^(1/(α-1)) = 1."""
    x = (alpha - 1) * z
    lo, hi = x.max() - 1.0, x.max()  # mass >= 1 at lo, 0 at hi
    for _ in range(60):
        tau = (lo + hi) / 2
        if np.sum(np.maximum(x - tau, 0) ** (1 / (alpha - 1))) >= 1:
            lo = tau
        else:
            hi = tau
    p = np.maximum(x - (lo + hi) / 2, 0) ** (1 / (alpha - 1))
    return p / p.sum()


def _np_weights(name, settings, s, allowed, mask):
    """Float64 weights [B, H, Lq, Lk] from scores s (bias already added)."""
    allowed = np.broadcast_to(allowed, s.shape)
    visible = allowed.sum(-1, keepdims=True)
    if name == "sigmoid":  # b = -log(real keys of the sequence)
        n = np.asarray(mask).sum(-1)[:, None, None, None]
        return np.where(allowed, 1 / (1 + np.exp(-(s - np.log(n)))), 0.0)
    if name == "relu":
        return np.where(allowed, np.maximum(s, 0) ** settings.get("power", 1), 0.0) / np.maximum(
            visible, 1)
    w = np.zeros_like(s)
    for idx in np.ndindex(*s.shape[:-1]):
        keep = allowed[idx]
        if not keep.any():
            continue
        z = s[idx][keep]
        if name != "sparsemax":
            w[(*idx, keep)] = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        elif settings.get("alpha", 2.0) == 2.0:
            w[(*idx, keep)] = _np_sparsemax_row(z)
        else:
            w[(*idx, keep)] = _np_entmax_bisect_row(z, 1.5)
    return w


# ---------------------------------------------------------------------------- formula tests

CASES = [
    ("dot", {}), ("general", {}), ("additive", {"attn_dim": 4}),
    ("cosine", {}), ("euclidean", {}), ("sigmoid", {}), ("relu", {"power": 1}),
    ("relu", {"power": 2}), ("sparsemax", {}), ("sparsemax", {"alpha": 1.5}),
]
MODES = [("bidirectional", False, L), ("causal", True, L), ("cross", False, LQ_CROSS)]


def _set_params(name, params):
    """Moves the init away from special values so the formulas are tested in general."""
    rng = np.random.default_rng(11)
    if name == "general":  # W = I/√d + noise: not symmetric, not a multiple of I
        w = params["w"]
        params = {"w": w + 0.3 * rng.standard_normal(w.shape).astype(np.float32) / np.sqrt(D)}
    if name == "cosine":  # τ = 0.5, 3, 20 and 500, clamped to 100
        params = {"log_scale": jnp.log(jnp.asarray([0.5, 3.0, 20.0, 500.0]))}
    return params


@pytest.mark.parametrize(("name", "settings"), CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_matches_numpy_formula(name, settings):
    """Outputs and recorded weights equal the float64 formula under padding, causal masking,
    cross attention, GQA and an additive bias; padded keys and the future change nothing."""
    module = attention.create(name, **settings)
    mask = _key_mask()
    params = _init(module, *_inputs(), mask, False)["params"]  # per-head: no length in shapes
    variables = {"params": _set_params(name, params)}
    for mode, causal, lq in MODES:
        q, k, v = _inputs(lq=lq)
        bias = jnp.asarray(np.random.default_rng(2).standard_normal((1, H, lq, L)), jnp.float32)
        out, weights = _apply(module, variables, q, k, v, mask, bias, causal)

        q64, k64, v64 = _f64(q, np.repeat(k, H // KV, axis=2), np.repeat(v, H // KV, axis=2))
        allowed = _allowed(mask, causal, lq, L)
        s = _np_scores(name, q64, k64, variables["params"]) + np.asarray(bias, np.float64)
        ref_w = _np_weights(name, settings, s, allowed, mask)
        ref = np.einsum("bhqk,bkhd->bqhd", ref_w, v64)
        np.testing.assert_allclose(weights, ref_w, atol=1e-5, err_msg=mode)
        np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=mode)
        assert (np.asarray(weights)[~np.broadcast_to(allowed, weights.shape)] == 0).all()

        # padded keys: any values, bit-identical outputs
        padded = ~mask[:, :, None, None]
        k2, v2 = (jnp.where(padded, 10 * x, x) + padded for x in (k, v))
        moved, _ = _apply(module, variables, q, k2, v2, mask, bias, causal)
        np.testing.assert_array_equal(moved, out, err_msg=mode)
        if causal:  # positions > t of q, k, v: bit-identical outputs <= t
            t = 6
            future = (jnp.arange(L) > t)[None, :, None, None]
            q3, k3, v3 = (jnp.where(future, x + 1.0, x) for x in (q, k, v))
            moved, _ = _apply(module, variables, q3, k3, v3, mask, bias, causal)
            np.testing.assert_array_equal(moved[:, : t + 1], out[:, : t + 1])


def test_numpy_sparsemax_references_agree():
    """The sort-based reference equals bisection with alpha = 2 (so the two checks agree)."""
    z = np.random.default_rng(0).standard_normal((20, 9)) * 2
    for row in z:
        np.testing.assert_allclose(_np_sparsemax_row(row), _np_entmax_bisect_row(row, 2.0),
                                   atol=1e-12)


@pytest.mark.parametrize("alpha", [2.0, 1.5])
def test_sparsemax_weights_are_sparse_distributions(alpha):
    """Rows sum to 1 over visible keys (0 for a blind query), with exact zeros among visible
    keys when the scores are spread out."""
    module = attention.create("sparsemax", alpha=alpha)
    q, k, v = _inputs()
    q = 3 * q  # spread the scores
    mask = _key_mask()
    variables = _init(module, q, k, v, mask, True)
    _, w = _apply(module, variables, q, k, v, mask, None, True)
    w = np.asarray(w)
    allowed = np.broadcast_to(_allowed(mask, True, L, L), w.shape)
    sums = w.sum(-1)
    seen = allowed.any(-1)
    np.testing.assert_allclose(sums[seen], 1.0, rtol=1e-5)
    assert (sums[~seen] == 0).all() and (~seen).any()  # row 1, query 0 sees no key
    assert (w >= 0).all() and (w[~allowed] == 0).all()
    zeros_among_visible = (w == 0) & allowed
    assert zeros_among_visible.sum() > allowed.sum() // 4, "expected many exact zeros"
    assert (w[:, :, -1] > 0).sum(-1).min() >= 1  # and still at least one key per row


def _analytic_jacobian(p, alpha):
    """d entmax / dz = diag(s) - s sᵀ / Σ s, s = p^(2 - alpha) on the support."""
    s = np.where(p > 0, p ** (2 - alpha), 0.0)
    return np.diag(s) - np.outer(s, s) / s.sum()


@pytest.mark.parametrize(("alpha", "fn"), [(2.0, sparsemax), (1.5, entmax15)])
def test_sparsemax_gradients_match_the_analytic_jacobian(alpha, fn):
    """Autodiff through the sort-based closed form gives the sparsemax / entmax Jacobian;
    hidden keys get no gradient; a fully hidden row has zero, finite gradient."""
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.standard_normal((4, 7)) * 1.5, jnp.float32)
    mask = jnp.asarray(np.array([[1] * 7, [1, 0, 1, 1, 0, 1, 1], [0] * 6 + [1], [0] * 7], bool))
    jac = jax.jit(jax.jacrev(fn))(z, mask)  # [4, 7, 4, 7]
    p = np.asarray(fn(z, mask), np.float64)
    for r in range(4):
        keep = np.asarray(mask[r])
        want = np.zeros((7, 7))
        if keep.any():
            want[np.ix_(keep, keep)] = _analytic_jacobian(p[r, keep], alpha)
        np.testing.assert_allclose(jac[r, :, r, :], want, atol=1e-5, err_msg=f"row {r}")
    assert np.isfinite(np.asarray(jac)).all()
    np.testing.assert_allclose(p[2], np.eye(7)[6])  # one visible key gets everything
    assert (p[3] == 0).all()


def test_general_with_scaled_identity_is_softmax():
    """W is initialised to I/√d, which makes q W kᵀ = q·kᵀ/√d: scaled dot-product attention."""
    q, k, v = _inputs()
    mask = _key_mask()
    general, softmax = attention.create("general"), attention.create("softmax")
    variables = _init(general, q, k, v, mask, True)
    np.testing.assert_allclose(variables["params"]["w"],
                               np.broadcast_to(np.eye(D) / np.sqrt(D), (H, D, D)), rtol=1e-7)
    out, _ = _apply(general, variables, q, k, v, mask, None, True)
    ref, _ = _apply(softmax, {}, q, k, v, mask, None, True)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_cosine_is_scale_invariant_and_safe_at_zero():
    """Rescaling q and k (per vector, by any positive factor) changes nothing; zero vectors
    give cosine 0 and finite gradients; τ starts at 10."""
    module = attention.create("cosine")
    q, k, v = _inputs()
    mask = _key_mask()
    variables = _init(module, q, k, v, mask, False)
    np.testing.assert_allclose(jnp.exp(variables["params"]["log_scale"]), 10.0, rtol=1e-6)
    out, _ = _apply(module, variables, q, k, v, mask, None, False)
    rng = np.random.default_rng(4)
    cq = jnp.asarray(rng.uniform(0.01, 50, (*q.shape[:3], 1)), jnp.float32)
    ck = jnp.asarray(rng.uniform(0.01, 50, (*k.shape[:3], 1)), jnp.float32)
    scaled, _ = _apply(module, variables, q * cq, k * ck, v, mask, None, False)
    np.testing.assert_allclose(scaled, out, atol=1e-5)

    q0, k0 = q.at[:, 3].set(0.0), k.at[:, 2].set(0.0)
    out0, w0 = _apply(module, variables, q0, k0, v, mask, None, False)
    w0 = np.asarray(w0)
    allowed = np.broadcast_to(_allowed(mask, False, L, L), w0.shape)
    row = w0[:, :, 3]  # query 3 is zero: uniform over its visible keys
    np.testing.assert_allclose(row, allowed[:, :, 3] / allowed[:, :, 3].sum(-1, keepdims=True),
                               atol=1e-6)

    def loss(q, k):
        return jnp.sum(module.apply(variables, q, k, v, mask=mask) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(q0, k0)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert np.isfinite(np.asarray(out0)).all()


def test_euclidean_is_translation_invariant():
    """-‖q - k‖² only sees differences: shifting every q and k by one vector changes nothing."""
    module = attention.create("euclidean")
    q, k, v = _inputs()
    mask = _key_mask()
    shift = jnp.asarray(np.random.default_rng(5).standard_normal(D), jnp.float32)
    out, _ = _apply(module, {}, q, k, v, mask, None, True)
    moved, _ = _apply(module, {}, q + shift, k + shift, v, mask, None, True)
    np.testing.assert_allclose(moved, out, atol=1e-5)


@pytest.mark.parametrize("name", ["sigmoid", "relu"])
def test_unnormalised_variants_ignore_trailing_padding(name):
    """n counts real keys only: a sequence padded with extra keys gives the output of the same
    sequence unpadded (sigmoid: b = -log(real keys); relu: 1 / visible keys)."""
    module = attention.create(name)
    q, k, v = _inputs()
    mask = jnp.asarray(np.arange(L) < L - 4)[None].repeat(B, 0)  # last 4 keys padded
    for causal in (False, True):
        padded, _ = _apply(module, {}, q, k, v, mask, None, causal)
        short, _ = _apply(module, {}, q[:, : L - 4], k[:, : L - 4], v[:, : L - 4],
                          jnp.ones((B, L - 4), bool), None, causal)
        np.testing.assert_allclose(padded[:, : L - 4], short, rtol=1e-6, atol=1e-7)


def test_sigmoid_weights_start_near_one_over_n():
    """With q = 0 every weight is σ(-log n) = 1 / (n + 1), so a row sums to n / (n + 1)."""
    module = attention.create("sigmoid")
    q, k, v = _inputs()
    mask = _key_mask()
    _, w = _apply(module, {}, jnp.zeros_like(q), k, v, mask, None, False)
    n = np.broadcast_to(np.asarray(mask).sum(-1)[:, None, None], (B, H, L))
    np.testing.assert_allclose(np.asarray(w).sum(-1), n / (n + 1), rtol=1e-6)


@pytest.mark.parametrize(("name", "bad"), [("relu", {"power": 0}),
                                           ("sparsemax", {"alpha": 1.7}),
                                           ("additive", {"attn_dim": -1})])
def test_bad_settings_raise(name, bad):
    q, k, v = _inputs()
    with pytest.raises(ValueError):
        attention.create(name, **bad).init(jax.random.key(0), q, k, v)


def test_param_shapes():
    """Per query head (GQA shares keys, not score parameters); attn_dim = 0 means head_dim."""
    q, k, v = _inputs()

    def shapes(name, **settings):
        init = functools.partial(attention.create(name, **settings).init, jax.random.key(0))
        return jax.tree.map(lambda x: x.shape, jax.eval_shape(init, q, k, v)["params"])

    assert shapes("additive") == {"w": (H, D, D), "u": (H, D, D), "v": (H, D)}
    assert shapes("additive", attn_dim=3) == {"w": (H, D, 3), "u": (H, D, 3), "v": (H, 3)}
    assert shapes("general") == {"w": (H, D, D)}
    assert shapes("cosine") == {"log_scale": (H,)}


def test_declared_flops():
    d, lq, lk = 8, 13, 11
    dense = 4.0 * lq * lk * d
    assert attention.create("dot").flops(lq, lk, d) == dense
    assert attention.create("general").flops(lq, lk, d) == dense + 2 * lq * d * d
    assert attention.create("additive", attn_dim=4).flops(lq, lk, d) == (
        2 * (lq + lk) * d * 4 + 4 * lq * lk * 4 + 2 * lq * lk * d)  # no q·kᵀ
    assert attention.create("cosine").flops(lq, lk, d) == dense + 2 * (lq + lk) * d
    assert attention.create("sparsemax").flops(lq, lk, d) > dense
    assert all(attention.create(n).state_size(d) is None for n, _ in CASES)
