"""Attention variants: the shared contract (run over every file in attnjax/attention) and each
variant against an independent float64 NumPy formula."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention import CapabilityError

B, L, H, D = 2, 13, 4, 8  # L = 13 is not a multiple of the chunk / window sizes below
# attention-level variants (mixer-level ones have their own contract in test_mixers.py)
NAMES = [n for n in attention.names() if attention.get(n).capabilities.level == "attention"]
# Outputs must be bit-identical under perturbations that may not reach them (future positions,
# padded keys, other batch rows). A variant whose exact arithmetic mixes in zero-weighted
# values may declare a tolerance here, with the reason. None needed so far: softmax/local
# replace masked logits with a constant and their weights by exact zeros; linear zeroes φ(k), v
# at padded keys, multiplies masked intra-chunk scores to exact zeros, and its inter-chunk state
# is a prefix sum that only reads earlier chunks.
LEAK_ATOL: dict[str, float] = {}


def _inputs(seed=0, b=B, lq=L, lk=L, heads=H, kv_heads=H, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, lq, heads, D))
    k = rng.standard_normal((b, lk, kv_heads, D))
    v = rng.standard_normal((b, lk, kv_heads, D))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v))


def _key_mask(b=B, lk=L):
    """Row 0: last 3 keys padded. Row 1: first key (left padding) and last 5 padded, so under
    causal masking query 0 of row 1 sees no key at all."""
    mask = np.ones((b, lk), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return jnp.asarray(mask)


def _module(name, **overrides):
    # each variant's small_settings exercise its windows/chunks/blocks at L = 13
    return attention.create(name, **{**attention.get(name).small_settings, **overrides})


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _variables(module, q, k, v, mask=None, causal=False):
    """The module's variables (jitted: XLA drops the forward pass that `init` traces)."""
    variables = module.init(jax.random.key(0), q, k, v, mask=mask, causal=causal)
    return {c: x for c, x in variables.items() if c != "intermediates"}


@functools.partial(jax.jit, static_argnames=("module", "causal", "sow"))
def _apply(module, variables, q, k, v, mask, causal, sow):
    mutable = "intermediates" if sow else False
    return module.apply(variables, q, k, v, mask=mask, causal=causal, mutable=mutable)


def _run(module, q, k, v, mask=None, causal=False, sow=False):
    """One call, jitted (one compile per module and shapes; op-by-op is slower here)."""
    return _apply(module, _variables(module, q, k, v, mask, causal), q, k, v, mask, causal, sow)


def _jitted(module, variables, causal):
    return jax.jit(lambda q, k, v, mask: module.apply(variables, q, k, v, mask=mask, causal=causal))


def _modes(name):
    caps = attention.get(name).capabilities
    return tuple(c for c, ok in ((False, caps.bidirectional), (True, caps.causal)) if ok)


def _assert_same(name, a, b):
    atol = LEAK_ATOL.get(name)
    if atol is None:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_dtype_finite(name, dtype):
    module = _module(name)
    q, k, v = _inputs(dtype=dtype)
    for causal in _modes(name):
        out = _run(module, q, k, v, causal=causal)
        assert out.shape == q.shape and out.dtype == dtype
        assert np.isfinite(np.asarray(out, np.float32)).all()
        if dtype == jnp.bfloat16:  # bfloat16 inputs track the float32 result
            ref = _run(module, *(x.astype(jnp.float32) for x in (q, k, v)), causal=causal)
            np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradients_under_jit(name):
    module = _module(name)
    q, k, v = _inputs()
    mask = _key_mask() if module.capabilities.padding_mask else None
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32)
    for causal in _modes(name):
        params = _variables(module, q, k, v, mask, causal)

        def loss(p, q, k, v, causal=causal):
            return jnp.sum(module.apply(p, q, k, v, mask=mask, causal=causal) * cotangent)

        value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(params, q, k, v)
        assert np.isfinite(value)
        for leaf in jax.tree.leaves(grads):
            assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize("name", NAMES)
def test_causal_does_not_leak_the_future(name):
    module = _module(name)
    if not module.capabilities.causal:
        pytest.skip("no causal mode")
    q, k, v = _inputs()
    mask = _key_mask() if module.capabilities.padding_mask else None
    f = _jitted(module, _variables(module, q, k, v, mask, True), causal=True)
    base = f(q, k, v, mask)
    noise = _inputs(seed=7)
    for t in (0, 4, 5, 9, L - 2):  # chunk / window boundaries for the contract settings
        future = (jnp.arange(L) > t)[None, :, None, None]
        for i in range(3):  # perturb q, k, v separately, then all at once
            moved = [q, k, v]
            moved[i] = jnp.where(future, noise[i], moved[i])
            _assert_same(name, f(*moved, mask)[:, : t + 1], base[:, : t + 1])
        moved = [jnp.where(future, n, x) for n, x in zip(noise, (q, k, v), strict=True)]
        _assert_same(name, f(*moved, mask)[:, : t + 1], base[:, : t + 1])


@pytest.mark.parametrize("name", NAMES)
def test_padded_keys_change_nothing(name):
    module = _module(name)
    if not module.capabilities.padding_mask:
        pytest.skip("no padding mask")
    q, k, v = _inputs()
    mask = _key_mask()
    padded = ~mask[:, :, None, None]
    _, k2, v2 = _inputs(seed=3)
    k2, v2 = jnp.where(padded, k2 * 10, k), jnp.where(padded, v2 * 10, v)
    for causal in _modes(name):
        f = _jitted(module, _variables(module, q, k, v, mask, causal), causal)
        _assert_same(name, f(q, k2, v2, mask), f(q, k, v, mask))


@pytest.mark.parametrize("name", NAMES)
def test_batch_rows_are_independent(name):
    module = _module(name)
    q, k, v = _inputs()
    q2, k2, v2 = _inputs(seed=5)
    other = (jnp.arange(B) > 0)[:, None, None, None]
    moved = [jnp.where(other, n, x) for n, x in zip((q2, k2, v2), (q, k, v), strict=True)]
    for causal in _modes(name):
        f = _jitted(module, _variables(module, q, k, v, None, causal), causal)
        base = f(q, k, v, None)
        _assert_same(name, f(*moved, None)[0], base[0])
        alone = _run(module, q[:1], k[:1], v[:1], causal=causal)  # another batch size
        np.testing.assert_allclose(alone[0], base[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_jit_matches_eager(name):
    module = _module(name)
    causal = not module.capabilities.bidirectional  # causal-only variants run causally
    q, k, v = _inputs()
    variables = _variables(module, q, k, v, causal=causal)
    eager = module.apply(variables, q, k, v, causal=causal)
    np.testing.assert_array_equal(module.apply(variables, q, k, v, causal=causal), eager)
    f = _jitted(module, variables, causal=causal)
    np.testing.assert_array_equal(f(q, k, v, None), f(q, k, v, None))
    np.testing.assert_allclose(f(q, k, v, None), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_grouped_query_heads(name):
    module = _module(name)
    q, k, v = _inputs(kv_heads=H // 2)
    mask = _key_mask() if module.capabilities.padding_mask else None
    for causal in _modes(name):
        out = _run(module, q, k, v, mask=mask, causal=causal)
        assert out.shape == q.shape
        full = _run(module, q, jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2), mask, causal)
        np.testing.assert_allclose(out, full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_enforced(name):
    module = _module(name)
    caps = module.capabilities
    causal = not caps.bidirectional  # the mode a causal-only variant is called in
    q, k, v = _inputs(lq=5, lk=L)
    if caps.cross_attention:
        assert _run(module, q, k, v, causal=causal).shape == q.shape
    else:
        with pytest.raises(CapabilityError):
            _run(module, q, k, v, causal=causal)
    q, k, v = _inputs()
    if not caps.causal:
        with pytest.raises(CapabilityError):
            _run(module, q, k, v, causal=True)
    if not caps.bidirectional:
        with pytest.raises(CapabilityError, match="causal only"):
            _run(module, q, k, v, causal=False)
    if not caps.logits:
        bias = jnp.zeros((1, H, L, L))
        with pytest.raises(CapabilityError, match="no explicit logits"):
            module.init(jax.random.key(0), q, k, v, causal=causal, bias=bias)
        with pytest.raises(CapabilityError, match="soft-capping"):
            _run(_module(name, logit_soft_cap=5.0), q, k, v, causal=causal)
    if not caps.padding_mask:
        with pytest.raises(CapabilityError):
            _run(module, q, k, v, mask=_key_mask(), causal=causal)
    flops = module.flops(L, L, D)
    assert np.isfinite(flops) and flops > 0
    state = module.state_size(D)
    assert state is None or state > 0


@pytest.mark.parametrize("name", NAMES)
def test_recorded_weights(name):
    module = _module(name)
    caps = module.capabilities
    q, k, v = _inputs()
    _, state = _run(module, q, k, v, causal=not caps.bidirectional, sow=True)
    if not caps.attention_weights:
        assert not jax.tree.leaves(state), f"{name} records {jax.tree.map(jnp.shape, state)}"
        return
    (w,) = state["intermediates"]["attention_weights"]
    assert w.shape == (B, H, L, L)
    if caps.normalized and caps.bidirectional:
        np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    mask = _key_mask() if module.capabilities.padding_mask else None
    for causal in _modes(name):
        _, state = _run(module, q, k, v, mask=mask, causal=causal, sow=True)
        w = np.asarray(state["intermediates"]["attention_weights"][0])
        assert (w >= 0).all()
        sums = w.sum(-1)
        if caps.normalized:
            assert np.all((np.abs(sums - 1) < 1e-5) | (sums == 0)), "rows sum to 1 (0 if blind)"
        hidden = _allowed(mask, causal, L, L)[:, None] == 0  # [B, 1, Lq, Lk]
        assert (np.broadcast_to(hidden, w.shape) <= (w == 0)).all(), "weight on a hidden key"


# --------------------------------------------------- float64 NumPy references for each variant


def _allowed(mask, causal, lq, lk, window=None):
    """[B or 1, Lq, Lk] bool: key j visible to query i."""
    ok = np.ones((1, lq, lk), bool) if mask is None else np.asarray(mask)[:, None, :]
    i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
    if causal:
        ok = ok & (j <= i)
    if window is not None:
        ok = ok & ((i - j < window) & (j <= i) if causal else np.abs(i - j) < window)
    return ok


def _np_softmax(q, k, v, allowed):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed[:, None], logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0))
    total = e.sum(-1, keepdims=True)
    w = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    return np.einsum("bhqk,bkhd->bqhd", w, v)


def _np_linear(q, k, v, mask, causal, eps=1e-6):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)

    def phi(x):
        return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))

    real = 1.0 if mask is None else np.asarray(mask, np.float64)[:, :, None, None]
    fq, fk, v = phi(q), phi(k) * real, v * real
    kv = np.einsum("bkhd,bkhe->bkhde", fk, v)  # [B, Lk, H, D, E]
    if causal:  # the RNN form: running sums of φ(k_j) v_jᵀ and φ(k_j) over j <= i
        state, norm = np.cumsum(kv, axis=1), np.cumsum(fk, axis=1)
        num, den = np.einsum("bqhd,bqhde->bqhe", fq, state), np.einsum("bqhd,bqhd->bqh", fq, norm)
    else:
        state, norm = kv.sum(1), fk.sum(1)
        num, den = np.einsum("bqhd,bhde->bqhe", fq, state), np.einsum("bqhd,bhd->bqh", fq, norm)
    return num / (den[..., None] + eps)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_softmax_matches_numpy_and_jax_nn(causal, padded):
    q, k, v = _inputs(kv_heads=H // 2)
    mask = _key_mask() if padded else None
    out = _run(attention.create("softmax"), q, k, v, mask=mask, causal=causal)
    np.testing.assert_allclose(out, _np_softmax(q, k, v, _allowed(mask, causal, L, L)), atol=1e-5)
    xla = _run(attention.create("softmax", implementation="xla"), q, k, v, mask, causal)
    np.testing.assert_allclose(xla, out, atol=1e-5)  # including row 1's blind query 0 -> 0
    if not (padded and causal):  # jax.nn averages all values for a query that sees no key
        jax_mask = None if mask is None else mask[:, None, None, :]
        ref = jax.nn.dot_product_attention(q, k, v, mask=jax_mask, is_causal=causal)
        np.testing.assert_allclose(out, ref, atol=1e-5)


def test_softmax_cross_attention_matches_numpy():
    q, k, v = _inputs(lq=5)
    mask = _key_mask()
    out = _run(attention.create("softmax"), q, k, v, mask=mask)
    np.testing.assert_allclose(out, _np_softmax(q, k, v, _allowed(mask, False, 5, L)), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_local_matches_numpy_band_and_softmax_when_window_covers(causal, padded):
    q, k, v = _inputs(kv_heads=H // 2)
    mask = _key_mask() if padded else None
    for window in (1, 4):
        out = _run(attention.create("local", window_size=window), q, k, v, mask, causal)
        ref = _np_softmax(q, k, v, _allowed(mask, causal, L, L, window))
        np.testing.assert_allclose(out, ref, atol=1e-5)
    soft = _run(attention.create("softmax"), q, k, v, mask, causal)
    out = _run(attention.create("local", window_size=L + 2), q, k, v, mask, causal)
    np.testing.assert_allclose(out, soft, atol=1e-6)


def test_local_weights_follow_the_band():
    q, k, v = _inputs()
    for causal in (False, True):
        _, state = _run(attention.create("local", window_size=3), q, k, v, causal=causal, sow=True)
        w = np.asarray(state["intermediates"]["attention_weights"][0])  # [B, H, L, L]
        band = _allowed(None, causal, L, L, window=3)[:, None]
        assert (w[np.broadcast_to(~band, w.shape)] == 0).all()
        assert (w[np.broadcast_to(band, w.shape)] > 0).all()


@pytest.mark.parametrize(("length", "chunks"), [(13, (1, 3, 8, 13, 18)), (16, (8,)), (1, (1, 64))])
def test_linear_causal_chunks_match_numpy(length, chunks):
    q, k, v = _inputs(lq=length, lk=length, kv_heads=H // 2)
    mask = _key_mask(lk=length) if length > 6 else None
    ref = _np_linear(q, k, v, mask, causal=True)
    for chunk in chunks:
        out = _run(attention.create("linear", chunk_size=chunk), q, k, v, mask, causal=True)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"chunk {chunk}")


@pytest.mark.parametrize("lq", [5, L])
def test_linear_noncausal_matches_numpy(lq):
    q, k, v = _inputs(lq=lq, kv_heads=H // 2)
    mask = _key_mask()
    for m in (None, mask):
        out = _run(attention.create("linear"), q, k, v, mask=m)
        np.testing.assert_allclose(out, _np_linear(q, k, v, m, False), rtol=1e-5, atol=1e-5)


def test_linear_declares_its_state_and_rejects_causal_cross():
    caps = attention.get("linear").capabilities
    assert _module("linear").state_size(D) == D * D + D and not caps.attention_weights
    q, k, v = _inputs(lq=5)
    with pytest.raises(CapabilityError):
        _run(attention.create("linear"), q, k, v, causal=True)
