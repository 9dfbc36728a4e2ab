"""Sparse-pattern and head-mixing variants (strided, longformer, bigbird, topk, block_local,
talking_heads, gated, differential) against float64 NumPy formulas and patterns built here."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from tests.test_attention import D, H, L, _allowed, _inputs, _key_mask


@functools.partial(jax.jit, static_argnames=("module",))
def _init(module, q, k, v):
    return module.init(jax.random.key(0), q, k, v).get("params", {})


@functools.partial(jax.jit, static_argnames=("module", "causal", "sow"))
def _call(module, params, q, k, v, mask=None, bias=None, causal=False, sow=False):
    out, state = module.apply({"params": params}, q, k, v, mask=mask, causal=causal, bias=bias,
                              mutable=["intermediates"])
    return (out, state["intermediates"]["attention_weights"][0]) if sow else out


def _run(name, q, k, v, /, mask=None, bias=None, causal=False, sow=False, params=None, **settings):
    """One jitted call; params default to none (the pattern variants have no parameters)."""
    module = attention.create(name, **settings)
    return _call(module, {} if params is None else params, q, k, v, mask, bias, causal, sow)


def _bias(seed=11, heads=H):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((1, heads, L, L)), jnp.float32)


def _np_softmax_rows(logits, allowed):
    """Row softmax over allowed entries (float64); rows with none allowed give 0."""
    logits = np.where(allowed, logits, -np.inf)
    top = logits.max(-1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0))
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def _np_logits(q, k, v):
    """float64 [B, H, Lq, Lk] logits q·kᵀ/√d and v repeated to q's heads."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    return np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]), v


def _np_attention(q, k, v, allowed, bias=None):
    """softmax(q·kᵀ/√d + bias) v over allowed [B|1, Lq, Lk] keys, float64."""
    logits, v = _np_logits(q, k, v)
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    w = _np_softmax_rows(logits, allowed[:, None])
    return np.einsum("bhqk,bkhd->bqhd", w, v)


# ------------------------------------------------------------- patterns built independently


def _np_pattern(length, rule, causal):
    """[L, L] bool from a per-pair rule(i, j), written as plain loops."""
    out = np.zeros((length, length), bool)
    for i in range(length):
        for j in range(length):
            out[i, j] = rule(i, j) and (j <= i or not causal)
    return out


def _strided_rule(s):
    return lambda i, j: abs(i - j) < s or abs(i - j) % s == 0


def _fixed_rule(s, c):
    return lambda i, j: i // s == j // s or j % s in range(s - c, s)


def _longformer_rule(w, g):
    return lambda i, j: abs(i - j) < w or i < g or j < g


def _bigbird_rule(b, w, g):  # no random blocks
    return lambda i, j: abs(i // b - j // b) <= w // 2 or i // b < g or j // b < g


PATTERNS = [
    ("strided", {"stride": 3}, _strided_rule(3)),
    ("strided", {"stride": 3, "mode": "fixed", "num_summary": 1}, _fixed_rule(3, 1)),
    ("strided", {"stride": 5, "mode": "fixed", "num_summary": 2}, _fixed_rule(5, 2)),
    ("longformer", {"window_size": 3, "num_global": 2}, _longformer_rule(3, 2)),
    ("bigbird", {"block_size": 2, "num_window_blocks": 3, "num_global_blocks": 1,
                 "num_random_blocks": 0}, _bigbird_rule(2, 3, 1)),
    ("bigbird", {"block_size": 3, "num_window_blocks": 1, "num_global_blocks": 0,
                 "num_random_blocks": 0}, _bigbird_rule(3, 1, 0)),
]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("name", "settings", "rule"), PATTERNS,
                         ids=[f"{n}-{'-'.join(map(str, s.values()))}" for n, s, _ in PATTERNS])
def test_pattern_matches_numpy_mask(name, settings, rule, causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask = _key_mask()
    allowed = _allowed(mask, causal, L, L) & _np_pattern(L, rule, causal)[None]  # [B, L, L]
    out, w = _run(name, q, k, v, mask, causal=causal, sow=True, **settings)
    np.testing.assert_allclose(out, _np_attention(q, k, v, allowed), atol=1e-5)
    w, seen = np.asarray(w), np.broadcast_to(allowed[:, None], w.shape)
    assert (w[~seen] == 0).all(), "weight outside the pattern"
    assert (w[seen] > 0).all(), "a key of the pattern got no weight"


def test_covering_patterns_equal_softmax():
    """Windows / blocks / k covering the sequence give softmax attention (bias, padding, both
    modes, GQA)."""
    q, k, v = _inputs(kv_heads=H // 2)
    bias, mask = _bias(), _key_mask()
    covering = [
        ("longformer", {"window_size": L, "num_global": 2}),
        ("bigbird", {"block_size": 2, "num_window_blocks": 13, "num_global_blocks": 1,
                     "num_random_blocks": 2}),
        ("strided", {"stride": L}),
        ("topk", {"k": L}),
        ("block_local", {"block_size": L + 3}),
    ]
    for causal in (False, True):
        soft = _run("softmax", q, k, v, mask, bias, causal)
        np.testing.assert_allclose(soft, _np_attention(q, k, v, _allowed(mask, causal, L, L),
                                                       np.asarray(bias)), atol=1e-5)
        for name, settings in covering:
            out = _run(name, q, k, v, mask, bias, causal, **settings)
            np.testing.assert_allclose(out, soft, atol=1e-6, err_msg=f"{name} {settings}")


# ------------------------------------------------------------------------------ bigbird


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("block", "window", "glob", "rand"), [(2, 3, 1, 1), (1, 3, 1, 2)])
def test_bigbird_random_blocks_fixed_whole_and_past_only(causal, block, window, glob, rand):
    settings = {"block_size": block, "num_window_blocks": window, "num_global_blocks": glob,
                "num_random_blocks": rand}
    patterns = []
    for seed in (0, 1):  # different inputs: the pattern does not depend on them
        _, w = _run("bigbird", *_inputs(seed=seed), causal=causal, sow=True, **settings)
        patterns.append(np.asarray(w > 0))  # [B, H, L, L]; no padding, so > 0 on the pattern
    np.testing.assert_array_equal(patterns[0], patterns[1])
    pattern = patterns[0][0, 0]
    assert (patterns[0] == pattern).all(), "same pattern for every row and head"
    # whole blocks: the token pattern is its block pattern, cut to j <= i when causal
    nb = -(-L // block)
    blocks = np.zeros((nb, nb), bool)
    for i, j in zip(*np.nonzero(pattern), strict=True):
        blocks[i // block, j // block] = True
    tokens = np.array([[blocks[i // block, j // block] for j in range(L)] for i in range(L)])
    np.testing.assert_array_equal(pattern, np.tril(tokens) if causal else tokens)
    # the random blocks: exactly min(r, #candidates) per query block, only from the past if causal
    fixed = np.array([[abs(a - c) <= window // 2 or a < glob or c < glob for c in range(nb)]
                      for a in range(nb)])
    past = np.tril(np.ones((nb, nb), bool), -1)
    candidates = ~fixed & past if causal else ~fixed
    extra = blocks & ~fixed
    assert (extra <= candidates).all(), "a random block from the future or the window"
    np.testing.assert_array_equal(extra.sum(1), np.minimum(rand, candidates.sum(1)))
    assert extra.sum() > 0
    _, w_seed = _run("bigbird", *_inputs(), causal=causal, sow=True, seed=5, **settings)
    if block == 1:
        assert (np.asarray(w_seed[0, 0]) > 0).tolist() != pattern.tolist(), "seed matters"


# --------------------------------------------------------------------------------- topk


def _np_topk_keep(logits, allowed, k):
    """Keep the k largest allowed logits per row; ties to the lower index (stable sort)."""
    keep, allowed = np.zeros(logits.shape, bool), np.broadcast_to(allowed[:, None], logits.shape)
    for idx in np.ndindex(*logits.shape[:-1]):
        ok = np.nonzero(allowed[idx])[0]
        order = ok[np.argsort(-logits[idx][ok], kind="stable")]
        keep[idx][order[:k]] = True
    return keep


@pytest.mark.parametrize("causal", [False, True])
def test_topk_matches_numpy(causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask = _key_mask()
    allowed = _allowed(mask, causal, L, L)
    logits, v64 = _np_logits(q, k, v)
    for kk in (1, 4):
        keep = _np_topk_keep(logits, allowed, kk)  # [B, H, L, L]
        out, w = _run("topk", q, k, v, mask, causal=causal, sow=True, k=kk)
        ref = np.einsum("bhqk,bkhd->bqhd", _np_softmax_rows(logits, keep), v64)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(w) > 0, keep)


def test_topk_gradient_is_the_masked_softmax_gradient():
    """The selection is held fixed: d(top-k attention) = d(softmax masked to the kept keys)."""
    q, k, v = _inputs(kv_heads=H // 2)
    mask, causal = _key_mask(), True
    logits, _ = _np_logits(q, k, v)
    module = attention.create("topk", k=4)
    keep = jnp.asarray(_np_topk_keep(logits, _allowed(mask, causal, L, L), 4))
    cot = jnp.asarray(np.random.default_rng(2).standard_normal(q.shape), jnp.float32)

    def masked(q, k, v):
        kr, vr = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
        s = jnp.einsum("bqhd,bkhd->bhqk", q, kr) / np.sqrt(D)
        w = jax.nn.softmax(jnp.where(keep, s, -1e30), axis=-1) * keep
        return jnp.sum(jnp.einsum("bhqk,bkhd->bqhd", w, vr) * cot)

    def topk(q, k, v):
        return jnp.sum(module.apply({}, q, k, v, mask=mask, causal=causal) * cot)

    got = jax.jit(jax.grad(topk, argnums=(0, 1, 2)))(q, k, v)
    want = jax.jit(jax.grad(masked, argnums=(0, 1, 2)))(q, k, v)
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_topk_ties_go_to_the_lowest_index():
    q, k, v = _inputs()
    q = jnp.zeros_like(q)  # every logit is 0: all keys tie
    mask = _key_mask()
    _, w = _run("topk", q, k, v, mask, causal=True, sow=True, k=3)
    allowed = _allowed(mask, True, L, L)  # [B, L, L]
    first = (np.cumsum(allowed, -1) <= 3) & allowed  # the first 3 visible keys
    w = np.asarray(w)
    np.testing.assert_array_equal(w > 0, np.broadcast_to(first[:, None], w.shape))
    sums = np.broadcast_to(np.minimum(allowed.sum(-1), 1)[:, None], w.shape[:3])  # 0: blind
    np.testing.assert_allclose(w.sum(-1), sums, atol=1e-6)


# -------------------------------------------------------------------------- block_local


@pytest.mark.parametrize("causal", [False, True])
def test_block_local_matches_numpy_blocks_with_bias(causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask, bias = _key_mask(), _bias()
    for block in (1, 5):
        same = _np_pattern(L, lambda i, j, b=block: i // b == j // b, causal)[None]
        allowed = _allowed(mask, causal, L, L) & same
        out = _run("block_local", q, k, v, mask, bias, causal, block_size=block)
        np.testing.assert_allclose(out, _np_attention(q, k, v, allowed, np.asarray(bias)),
                                   atol=1e-5, err_msg=f"block {block}")
    bias2 = bias[0, :, 0, :]  # [H, L]: broadcast over batch and queries
    out = _run("block_local", q, k, v, mask, bias2[:, None], causal, block_size=4)
    same = _np_pattern(L, lambda i, j: i // 4 == j // 4, causal)[None]
    ref = _np_attention(q, k, v, _allowed(mask, causal, L, L) & same, np.asarray(bias2)[:, None])
    np.testing.assert_allclose(out, ref, atol=1e-5)


# ------------------------------------------------------------------- head mixing / gating


def _random_params(params, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * jnp.asarray(rng.standard_normal(p.shape),
                                                          jnp.float32), params)


@pytest.mark.parametrize("causal", [False, True])
def test_talking_heads_identity_is_softmax_and_mixing_matches_numpy(causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask, bias = _key_mask(), _bias()
    params = _init(attention.create("talking_heads"), q, k, v)
    np.testing.assert_array_equal(params["logits_mix"], np.eye(H))
    np.testing.assert_array_equal(params["weights_mix"], np.eye(H))
    out = _run("talking_heads", q, k, v, mask, bias, causal, params=params)
    soft = _run("softmax", q, k, v, mask, bias, causal)
    np.testing.assert_allclose(out, soft, atol=1e-6)

    params = _random_params(params, seed=3)
    out, w = _run("talking_heads", q, k, v, mask, bias, causal, sow=True, params=params)
    logits, v64 = _np_logits(q, k, v)
    p_l, p_w = (np.asarray(params[n], np.float64) for n in ("logits_mix", "weights_mix"))
    mixed = np.einsum("bhqk,hg->bgqk", logits, p_l) + np.asarray(bias, np.float64)
    weights = _np_softmax_rows(mixed, _allowed(mask, causal, L, L)[:, None])
    np.testing.assert_allclose(w, weights, atol=1e-5)  # recorded: before the weights mixing
    ref = np.einsum("bhqk,hg,bkgd->bqgd", weights, p_w, v64)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_gated_open_gate_is_softmax_and_gate_matches_numpy(causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask, bias = _key_mask(), _bias()
    params = _random_params(_init(attention.create("gated"), q, k, v), seed=4)
    soft = _run("softmax", q, k, v, mask, bias, causal)
    open_gate = {**params, "gate_bias": jnp.full_like(params["gate_bias"], 1e4)}  # σ = 1
    out = _run("gated", q, k, v, mask, bias, causal, params=open_gate)
    np.testing.assert_allclose(out, soft, atol=1e-6)

    out = _run("gated", q, k, v, mask, bias, causal, params=params)
    attn = _np_attention(q, k, v, _allowed(mask, causal, L, L), np.asarray(bias))
    gate = np.einsum("bqhd,hde->bqhe", np.asarray(q, np.float64),
                     np.asarray(params["gate_kernel"], np.float64))
    gate = 1 / (1 + np.exp(-(gate + np.asarray(params["gate_bias"], np.float64))))
    np.testing.assert_allclose(out, attn * gate, atol=1e-5)


def _np_differential(q, k, v, allowed, params, lambda_init, bias):
    """The paper's formula in float64 with the module's actual parameters."""
    p = {n: np.asarray(x, np.float64) for n, x in params.items()}
    half = q.shape[-1] // 2
    lam = (np.exp(p["lambda_q1"] @ p["lambda_k1"]) - np.exp(p["lambda_q2"] @ p["lambda_k2"])
           + lambda_init)
    maps = []
    for part in (slice(0, half), slice(half, None)):
        logits, v64 = _np_logits(q[..., part], k[..., part], v)  # / √(d/2)
        maps.append(_np_softmax_rows(logits + np.asarray(bias, np.float64), allowed[:, None]))
    heads = np.einsum("bhqk,bkhd->bqhd", maps[0] - lam * maps[1], v64)
    rms = np.sqrt(np.mean(heads**2, axis=-1, keepdims=True) + 1e-5)
    return heads / rms * p["norm_scale"] * (1 - lambda_init)


@pytest.mark.parametrize("causal", [False, True])
def test_differential_matches_numpy_formula(causal):
    q, k, v = _inputs(kv_heads=H // 2)
    mask, bias = _key_mask(), _bias()
    module = attention.create("differential", lambda_init=0.5)
    params = _random_params(_init(module, q, k, v), seed=6)
    out = _call(module, params, q, k, v, mask, bias, causal)
    ref = _np_differential(q, k, v, _allowed(mask, causal, L, L), params, 0.5, bias)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    if causal:  # row 1, query 0 sees no key: output 0
        np.testing.assert_array_equal(np.asarray(out)[1, 0], 0.0)


def test_differential_needs_an_even_head_dim():
    q, k, v = (x[..., :7] for x in _inputs())
    with pytest.raises(ValueError, match="even head_dim"):
        _run("differential", q, k, v)
