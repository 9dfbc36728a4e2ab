"""The fast attention paths against the truth: the blockwise kernel (forward and gradients)
against a float64 reference, the tiled path of every BlockwiseScored variant against its own
reference path, which implementation `auto` picks where, and the blockwise path's memory."""

from __future__ import annotations

import functools
import runpy
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention import _fused
from attnjax.attention._blockwise import blockwise_attention

B, H, D = 2, 4, 8
BLOCK = 4  # L = 13 and Lk = 11 are not multiples of it


def _inputs(lq, lk, kv_heads, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    shapes = [(B, lq, H, D), (B, lk, kv_heads, D), (B, lk, kv_heads, D)]
    return tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in shapes)


def _key_mask(lk):
    """Row 0: last 3 keys padded; row 1: first and last 4 (causal query 0 of row 1 sees none)."""
    mask = np.ones((B, lk), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -4:] = False
    return jnp.asarray(mask)


def _alibi(lq, lk):
    """ALiBi [1, H, Lq, Lk]: -slope_h · |i - j|."""
    slopes = 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
    dist = np.abs(np.arange(lq)[:, None] - np.arange(lk)[None, :])
    return jnp.asarray(-slopes[:, None, None] * dist, jnp.float32)[None]


def _t5(lq, lk, batch=1):
    """A T5-style learned relative bias, here random: [batch, H, Lq, Lk]."""
    return jnp.asarray(np.random.default_rng(9).standard_normal((batch, H, lq, lk)), jnp.float32)


def _reference64(q, k, v, mask, causal, bias, soft_cap):
    """Plain float64 softmax attention; hidden keys get a finite -1e30 (finite gradients) and
    a query that sees no key outputs 0."""
    q, k, v = (x.astype(jnp.float64) for x in (q, k, v))
    rep = q.shape[2] // k.shape[2]
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias.astype(jnp.float64)
    if soft_cap:
        s = soft_cap * jnp.tanh(s / soft_cap)
    lq, lk = q.shape[1], k.shape[1]
    visible = jnp.ones((1, 1, lq, lk), bool)
    if mask is not None:
        visible = visible & mask[:, None, None, :]
    if causal:
        visible = visible & jnp.tril(jnp.ones((lq, lk), bool))
    w = jax.nn.softmax(jnp.where(visible, s, -1e30), axis=-1)
    w = jnp.where(jnp.any(visible, axis=-1, keepdims=True), w, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", w, v)


# (name, Lq, Lk, kv heads, causal, padded, bias, soft_cap)
CASES = [
    ("causal_padded", 13, 13, H, True, True, None, 0.0),
    ("bidirectional_padded", 13, 13, H, False, True, None, 0.0),
    ("cross", 5, 11, H, False, True, None, 0.0),
    ("cross_causal_gqa", 5, 11, 2, True, False, None, 0.0),
    ("gqa_alibi", 13, 13, 2, True, True, "alibi", 0.0),
    ("t5_per_batch", 13, 13, H, False, True, "t5", 0.0),
    ("soft_cap_mqa", 13, 13, 1, True, True, "alibi", 2.0),
    ("one_block", 3, 3, H, True, False, None, 0.0),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_blockwise_matches_float64_reference(case):
    _, lq, lk, kv_heads, causal, padded, bias_kind, soft_cap = case
    q, k, v = _inputs(lq, lk, kv_heads)
    mask = _key_mask(lk) if padded else None
    bias = {None: None, "alibi": _alibi(lq, lk), "t5": _t5(lq, lk, batch=B)}[bias_kind]
    if bias is None:
        bias = jnp.zeros((1, 1, 1, 1), jnp.float32)  # a broadcast bias: its gradient sums
    cotangent = jnp.asarray(np.random.default_rng(1).standard_normal((B, lq, H, D)))

    def fast(q, k, v, bias):
        return blockwise_attention(q, k, v, mask=mask, causal=causal, bias=bias,
                                   soft_cap=soft_cap, block_size=BLOCK)

    def ref(q, k, v, bias):
        return _reference64(q, k, v, mask, causal, bias, soft_cap)

    def grads(fn, *args):
        return jax.grad(lambda *a: jnp.sum(fn(*a) * cotangent), argnums=(0, 1, 2, 3))(*args)

    fast_out = jax.jit(fast)(q, k, v, bias)
    fast_grads = jax.jit(functools.partial(grads, fast))(q, k, v, bias)
    with jax.enable_x64(True):
        ref_out = np.asarray(jax.jit(ref)(q, k, v, bias))
        ref_grads = [np.asarray(g) for g in jax.jit(functools.partial(grads, ref))(q, k, v, bias)]
    np.testing.assert_allclose(fast_out, ref_out, rtol=1e-5, atol=2e-6)
    for name, got, want in zip(["q", "k", "v", "bias"], fast_grads, ref_grads, strict=True):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5, err_msg=name)
    if padded:  # blind queries (row 1, query 0 under causal masking) output exact zeros
        assert np.isfinite(np.asarray(fast_out)).all()


def test_blockwise_hidden_keys_have_exactly_zero_influence():
    """Future and padded keys never reach an output: bit-identical, not merely close."""
    q, k, v = _inputs(13, 13, 2)
    mask = _key_mask(13)
    f = jax.jit(functools.partial(blockwise_attention, mask=mask, causal=True, block_size=BLOCK))
    base = f(q, k, v)
    future = (jnp.arange(13) > 5)[None, :, None, None]
    hidden = future | ~mask[:, :, None, None]
    moved = f(jnp.where(future, 100.0, q), jnp.where(hidden, -7.0, k), jnp.where(hidden, 1e6, v))
    np.testing.assert_array_equal(moved[:, :6], base[:, :6])
    assert (np.asarray(base)[1, 0] == 0).all()  # row 1, query 0 sees no key


# ------------------------------------------------------------------ the scored variants

SCORED = [("softmax", {}), ("dot", {}), ("general", {}), ("cosine", {}), ("euclidean", {}),
          ("sigmoid", {}), ("relu", {"power": 2}), ("gated", {}), ("differential", {})]


@pytest.mark.parametrize(("name", "settings"), SCORED, ids=[n for n, _ in SCORED])
def test_tiled_variant_matches_its_reference(name, settings):
    """Outputs and gradients (q, k, v, parameters, bias) of implementation='blockwise' equal
    implementation='reference' (itself checked against float64 NumPy elsewhere) with padding
    (a blind query included), causal cross attention, GQA, an ALiBi bias, soft-capping and
    lengths that are not multiples of the block."""
    for lq, lk, causal, cap in ((13, 11, True, 3.0),):
        q, k, v = _inputs(lq, lk, 2, seed=3)
        mask, bias = _key_mask(lk), _alibi(lq, lk)
        make = functools.partial(attention.create, name, block_size=BLOCK, logit_soft_cap=cap,
                                 **settings)
        fast, slow = make(implementation="blockwise"), make(implementation="reference")
        params = slow.init(jax.random.key(0), q, k, v, mask=mask, causal=causal)
        params = jax.tree.map(lambda x: x * 1.3, params)  # away from the init's special values
        cotangent = jnp.asarray(np.random.default_rng(4).standard_normal(q.shape), jnp.float32)

        def loss(module, p, q, k, v, bias):
            out = module.apply(p, q, k, v, mask=mask, causal=causal, bias=bias)  # noqa: B023
            return jnp.sum(out * cotangent), out  # noqa: B023

        grad = jax.grad(loss, argnums=(1, 2, 3, 4, 5), has_aux=True)
        (g_fast, out_fast), (g_slow, out_slow) = (
            jax.jit(functools.partial(grad, m))(params, q, k, v, bias) for m in (fast, slow))
        np.testing.assert_allclose(out_fast, out_slow, rtol=1e-5, atol=1e-5)
        for got, want in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ which path runs


def _path(module, q, k, v, mutable=False, **kwargs):
    return module.apply({}, q, k, v, method="resolve_implementation", mutable=mutable, **kwargs)


def test_auto_on_cpu_is_blockwise_except_where_weights_are_needed():
    q, k, v = _inputs(13, 13, H)
    module = attention.create("softmax")
    assert module.implementation == "auto"
    assert jax.default_backend() == "cpu"
    assert _path(module, q, k, v) == "blockwise"
    path, _ = _path(module, q, k, v, mutable=["intermediates"])  # recording weights: heatmaps
    assert path == "reference"
    dropout = attention.create("softmax", attention_dropout_rate=0.1)
    assert _path(dropout, q, k, v, deterministic=True) == "blockwise"
    assert _path(dropout, q, k, v, deterministic=False) == "reference"
    assert _path(attention.create("softmax", implementation="xla"), q, k, v) == "xla"
    # the recorded weights come with the same output as the tiled path
    out, state = module.apply({}, q, k, v, causal=True, mutable=["intermediates"])
    assert state["intermediates"]["attention_weights"][0].shape == (B, H, 13, 13)
    np.testing.assert_allclose(out, module.apply({}, q, k, v, causal=True), atol=1e-6)


def test_auto_choice_per_backend(monkeypatch):
    bf16 = _inputs(256, 256, H, dtype=jnp.bfloat16)
    f32 = _inputs(256, 256, H)
    monkeypatch.setattr(_fused, "_cuda_compute_capability", lambda: 9.0)
    assert _fused.choose("gpu", *bf16, causal=True) == "cudnn"
    assert _fused.choose("gpu", *f32, causal=True) == "xla"  # cuDNN needs fp16/bf16
    assert _fused.choose("gpu", *bf16, soft_cap=30.0) == "blockwise"
    cross = (bf16[0][:, :5], *bf16[1:])
    assert _fused.choose("gpu", *cross, causal=True) == "xla"
    assert _fused.choose("gpu", *cross, causal=False) == "cudnn"
    odd = _inputs(13, 13, H, dtype=jnp.bfloat16)
    assert _fused.choose("gpu", *odd, bias=_alibi(13, 13)) == "xla"  # bias needs even lengths
    monkeypatch.setattr(_fused, "_cuda_compute_capability", lambda: None)  # e.g. ROCm
    assert _fused.choose("gpu", *bf16) == "xla"
    assert _fused.choose("tpu", *f32, causal=True) == "pallas"
    assert _fused.choose("tpu", *_inputs(13, 13, H)) == "xla"
    assert _fused.choose("cpu", *bf16) == "blockwise"


def test_fused_xla_kernel_matches_blockwise():
    """The XLA kernel and the cuDNN wrapper's shared pieces (blind rows -> 0) on CPU."""
    q, k, v = _inputs(13, 13, 2)
    mask = _key_mask(13)
    for causal in (False, True):
        xla = jax.jit(_fused.xla_attention, static_argnums=4)(q, k, v, mask, causal,
                                                              _alibi(13, 13))
        tiled = jax.jit(functools.partial(blockwise_attention, causal=causal))(
            q, k, v, mask=mask, bias=_alibi(13, 13))
        np.testing.assert_allclose(xla, tiled, atol=1e-5)


def test_prefix_masks_become_lengths():
    lengths, is_prefix = _fused.prefix_lengths(jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1]], bool))
    assert lengths.tolist() == [2, 4] and bool(is_prefix)
    _, is_prefix = _fused.prefix_lengths(_key_mask(13))  # row 1 is left-padded
    assert not bool(is_prefix)


def test_cudnn_wrapper_logic_with_xla_standing_in(monkeypatch):
    """cudnn_attention's own logic (prefix mask -> lengths, any other mask -> dense, blind
    rows -> 0, bias cast and broadcast) on CPU, with jax's XLA implementation standing in
    for the cuDNN kernel, which needs an NVIDIA GPU (scripts/gpu_attention_check.py)."""
    real = jax.nn.dot_product_attention

    def stand_in(*args, implementation=None, **kwargs):
        assert implementation == "cudnn"
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", stand_in)
    q, k, v = _inputs(13, 13, 2)
    right = jnp.asarray(np.arange(13)[None] < np.asarray([[9], [0]]))  # row 1: no real key
    for mask in (right, _key_mask(13)):
        for causal in (False, True):
            got = jax.jit(_fused.cudnn_attention, static_argnums=4)(q, k, v, mask, causal,
                                                                    _alibi(13, 13)[0])
            want = blockwise_attention(q, k, v, mask=mask, causal=causal, bias=_alibi(13, 13))
            np.testing.assert_allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------ memory


def test_blockwise_gradient_memory_is_a_fraction_of_the_reference():
    """XLA's compiled temporaries for grad of a causal softmax at L = 4096, head_dim 64, one
    head: the tiled path needs at most 1/8 of the reference's (measured: ~1/39)."""
    x = jax.ShapeDtypeStruct((1, 4096, 1, 64), jnp.float32)

    def temp_bytes(implementation):
        module = attention.create("softmax", implementation=implementation)

        def loss(q, k, v):
            return jnp.sum(jnp.square(module.apply({}, q, k, v, causal=True)))

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    reference, tiled = temp_bytes("reference"), temp_bytes("blockwise")
    assert reference >= 4096 * 4096 * 4  # at least one [L, L] float32 matrix
    assert tiled * 8 <= reference, (tiled, reference)


# ------------------------------------------------------------------ the GPU check script


def test_gpu_check_script_runs_in_smoke_mode(capsys):
    """scripts/gpu_attention_check.py --smoke: the whole script at tiny shapes (on CPU)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_attention_check.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--smoke"]) == 0
    printed = capsys.readouterr().out
    assert "all checks pass" in printed and "| left-padded alibi | blockwise |" in printed
    assert "| auto | blockwise |" in printed and "FlashAttention" in printed
