"""Mixer-level variants: the shared contract (run over every variant whose capabilities say
level="mixer") and each mixer against an independent float64 NumPy formula.

A mixer is called as module(x, *, mask=None, causal=False, deterministic=True) on
x: [batch, length, d_model] and returns [batch, length, d_model]; it replaces the whole
token-mixing sublayer (no q/k/v/out projections around it).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention
from attnjax.attention import CapabilityError

B, L, D = 2, 13, 8  # batch, length (not a multiple of anything in small_settings), d_model
MAX_LENGTH = 16  # the Block's max_length, for needs_max_length mixers
NAMES = [n for n in attention.names() if attention.get(n).capabilities.level == "mixer"]
# Outputs at positions <= t must be bit-identical when inputs after t change. FFT convolutions
# are the declared exception: every FFT output is a sum over all frequencies, so future inputs
# move past outputs by rounding (the tolerance, for these inputs: the future is noise x 10),
# never by more; tests/test_variants_conv.py checks each against an exactly causal direct sum.
LEAK_ATOL: dict[str, float] = {"s4d": 2e-6, "h3": 5e-5, "hyena": 5e-5, "base_conv": 1e-5}


def _x(seed=0, b=B, length=L, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((b, length, D)), dtype)


def _mask(b=B, length=L):
    """Row 0: last 3 positions padded. Row 1: first (left padding) and last 5 padded."""
    mask = np.ones((b, length), bool)
    mask[0, -3:] = False
    mask[1, 0] = mask[1, -5:] = False
    return jnp.asarray(mask)


def _module(name, **overrides):
    # each mixer's small_settings exercise its structure (projections, hidden units) at L = 13
    settings = {"max_length": MAX_LENGTH, **attention.get(name).small_settings, **overrides}
    return attention.create(name, **settings)


def _modes(module):
    caps = module.capabilities
    return tuple(c for c, ok in ((False, caps.bidirectional), (True, caps.causal)) if ok)


@functools.cache
@functools.partial(jax.jit, static_argnames="module")
def _init(module):
    """Parameters for each mode, initialised in one compile. They may depend on d_model and
    max_length, never on the batch size or the length of the input."""
    out = {}
    for causal in _modes(module):
        variables = module.init(jax.random.key(0), _x(), causal=causal)
        out[causal] = {c: v for c, v in variables.items() if c != "intermediates"}
    return out


def _variables(module, causal):
    return _init(module)[causal]


@functools.partial(jax.jit, static_argnames=("module", "causal"))
def _apply(module, variables, x, mask, causal):
    """(output, recorded intermediates); one compile per module, mode, shapes and masking."""
    return module.apply(variables, x, mask=mask, causal=causal, mutable="intermediates")


def _run(module, x, mask=None, causal=False):
    return _apply(module, _variables(module, causal), x, mask, causal)[0]


def _padding(module):
    """The padding mask if the mixer takes one. Most checks run with it, so that one compiled
    function per mode serves them all (the None path is checked by test_shape_dtype_finite)."""
    return _mask() if module.capabilities.padding_mask else None


# ---------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_dtype_finite(name, dtype):
    module = _module(name)
    x = _x(dtype=dtype)
    # float32 in every mode; bfloat16 in the first mode only (one more compile per mixer)
    for causal in _modes(module)[: 1 if dtype == jnp.bfloat16 else None]:
        out, state = _apply(module, _variables(module, causal), x, None, causal)
        assert out.shape == x.shape and out.dtype == dtype
        assert np.isfinite(np.asarray(out, np.float32)).all()
        recorded = {k: x for k, x in state.get("intermediates", {}).items()
                    if k != "recurrent_state"}  # a recurrent form's state: test_recurrent_forms
        if not module.capabilities.attention_weights:
            assert not jax.tree.leaves(recorded), f"{name} records {jax.tree.map(jnp.shape, state)}"
        if dtype == jnp.bfloat16:  # bfloat16 inputs track the float32 result
            ref = _run(module, x.astype(jnp.float32), causal=causal)
            np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradients_under_jit(name):
    module = _module(name)
    mask, cotangent = _padding(module), _x(seed=1)

    def loss(variables, x):  # every mode at once: one compile
        outs = [module.apply(v, x, mask=mask, causal=c) for c, v in variables.items()]
        return sum(jnp.sum(out * cotangent) for out in outs)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(_init(module), _x())
    assert np.isfinite(value)
    for leaf in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(leaf)).all()


@pytest.mark.parametrize("name", NAMES)
def test_causal_does_not_leak_the_future(name):
    module = _module(name)
    if not module.capabilities.causal:
        pytest.skip("no causal mode")
    x, noise, mask = _x(), _x(seed=7) * 10, _padding(module)
    base = _run(module, x, mask, causal=True)
    for t in (0, 4, 5, 9, L - 2):
        future = (jnp.arange(L) > t)[None, :, None]
        moved = _run(module, jnp.where(future, noise, x), mask, causal=True)
        if name in LEAK_ATOL:
            np.testing.assert_allclose(moved[:, : t + 1], base[:, : t + 1], rtol=0,
                                       atol=LEAK_ATOL[name], err_msg=f"t = {t}")
        else:
            np.testing.assert_array_equal(moved[:, : t + 1], base[:, : t + 1],
                                          err_msg=f"t = {t}")


@pytest.mark.parametrize("name", NAMES)
def test_padded_positions_change_nothing(name):
    module = _module(name)
    if not module.capabilities.padding_mask:
        pytest.skip("no padding mask")
    x, mask = _x(), _mask()
    moved = jnp.where(mask[..., None], x, _x(seed=3) * 10)
    real = np.asarray(mask)[..., None]
    for causal in _modes(module):
        base = np.where(real, _run(module, x, mask, causal), 0)
        np.testing.assert_array_equal(np.where(real, _run(module, moved, mask, causal), 0), base)


@pytest.mark.parametrize("name", NAMES)
def test_batch_rows_are_independent(name):
    module = _module(name)
    x, mask = _x(), _padding(module)
    moved = jnp.where((jnp.arange(B) > 0)[:, None, None], _x(seed=5), x)
    for causal in _modes(module):
        base = _run(module, x, mask, causal)
        np.testing.assert_array_equal(_run(module, moved, mask, causal)[0], base[0])
    alone = _run(module, x[:1], None if mask is None else mask[:1], causal)  # batch size 1
    np.testing.assert_allclose(alone[0], base[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    module = _module(name)
    x, mask, causal = _x(), _padding(module), _modes(module)[-1]
    again = _init.__wrapped__(module)  # initialised again (not cached): the same parameters
    assert jax.tree.all(jax.tree.map(np.array_equal, again, _init(module)))
    np.testing.assert_array_equal(_run(module, x, mask, causal), _run(module, x, mask, causal))


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_enforced(name):
    module = _module(name)
    caps = module.capabilities
    causal = not caps.bidirectional  # the mode a causal-only mixer is called in
    key = jax.random.key(0)
    # one sequence in, no keys/values from another: cross attention is impossible at this level
    assert caps.level == "mixer" and not caps.cross_attention
    assert not caps.logits, "a mixer gets no logits bias, so it cannot declare logits"
    call = inspect.signature(type(module).__call__).parameters
    assert list(call)[:2] == ["self", "x"]
    assert {p for p, v in call.items() if v.kind == v.KEYWORD_ONLY} == {
        "mask", "causal", "deterministic"
    }
    assert set(module.small_settings) <= set(attention.options(name)), "unknown small_settings"

    def init(x, mask=None, causal=causal, module=module):  # traces the call, compiles nothing
        return jax.eval_shape(lambda: module.init(key, x, mask=mask, causal=causal))

    with pytest.raises(ValueError, match=r"\[batch, length, d_model\]"):
        init(_x()[0])
    with pytest.raises(ValueError, match="mask"):
        init(_x(), _mask()[:, :-1])
    if not caps.causal:
        with pytest.raises(CapabilityError):
            init(_x(), causal=True)
    if not caps.bidirectional:
        with pytest.raises(CapabilityError, match="causal only"):
            init(_x(), causal=False)
    if not caps.padding_mask:
        with pytest.raises(CapabilityError):
            init(_x(), _mask())
    longer = _x(length=MAX_LENGTH + 4)
    if caps.needs_max_length:
        with pytest.raises(ValueError, match="max_length"):
            init(_x(length=MAX_LENGTH + 1))
        assert init(_x(length=MAX_LENGTH))  # up to max_length is fine
    else:  # parameters do not depend on the length: any length runs with them
        variables = _variables(module, causal)
        out = jax.eval_shape(lambda: module.apply(variables, longer, causal=causal))
        assert out.shape == longer.shape
    flops = module.flops(L, L, D)  # for a mixer: one sequence, whole layer, head_dim = d_model
    assert np.isfinite(flops) and flops > 0
    state = module.state_size(D)
    assert state is None or state >= 0


@pytest.mark.parametrize("name", NAMES)
def test_logit_options_are_refused(name):
    x, causal = _x(), _modes(_module(name))[0]
    for option in ({"logit_soft_cap": 5.0}, {"attention_dropout_rate": 0.1}):
        module = _module(name, **option)
        try:
            jax.eval_shape(lambda m=module: m.init(jax.random.key(0), x, causal=causal))
        except CapabilityError:
            continue
        raise AssertionError(f"{name} accepted {option} and silently ignored it")


# --------------------------------------------------- float64 NumPy references for each mixer


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _np_gru_step(u, state, gx):  # u [H, 3, H]; gx [3, H] = W x_t + b; Cho et al. 2014
    (h,) = state
    r = _sigmoid(gx[0] + h @ u[:, 0])
    z = _sigmoid(gx[1] + h @ u[:, 1])
    candidate = np.tanh(gx[2] + (r * h) @ u[:, 2])
    return (z * h + (1 - z) * candidate,)


def _np_lstm_step(u, state, gx):  # u [H, 4, H]; gx [4, H], gates (i, f, g, o)
    h, c = state
    pre = gx + np.einsum("h,hgk->gk", h, u)
    i, f, g, o = _sigmoid(pre[0]), _sigmoid(pre[1]), np.tanh(pre[2]), _sigmoid(pre[3])
    c = f * c + i * g
    return (o * np.tanh(c), c)


def _np_recurrent(step, carry_size, params, x, mask, causal):
    """Each row's real positions alone, scanned forward (and backward), hidden states summed and
    projected; the padded positions are simply absent. Returns [B, L, d] (0 where padded)."""
    p, out = _np(params), np.zeros(x.shape)
    for b in range(x.shape[0]):
        real = np.flatnonzero(np.asarray(mask[b])) if mask is not None else np.arange(x.shape[1])
        seq = np.asarray(x[b], np.float64)[real]  # [n, d]
        total = 0.0
        for direction in ("forward",) if causal else ("forward", "backward"):
            kernel, bias = p[f"{direction}_input"]["kernel"], p[f"{direction}_input"]["bias"]
            u = p[f"{direction}_recurrent"]
            gates = (seq @ kernel + bias).reshape(len(real), u.shape[1], u.shape[0])  # [n, G, H]
            state, hs = tuple(np.zeros(u.shape[0]) for _ in range(carry_size)), []
            order = range(len(real)) if direction == "forward" else reversed(range(len(real)))
            for t in order:
                state = step(u, state, gates[t])
                hs.append(state[0])
            total = total + np.stack(hs if direction == "forward" else hs[::-1])  # [n, H]
        if "output" in p:
            total = total @ p["output"]["kernel"] + p["output"]["bias"]
        out[b, real] = total
    return out


def _random_variables(module, causal, scale=0.5):
    """Variables of the module's shapes drawn by NumPy (a formula must hold for any parameters;
    this spares compiling another init)."""
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), _x(), causal=causal))
    rng = np.random.default_rng(11)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        {"params": shapes["params"]})


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_recurrent_mixers_match_numpy(name):
    step, carry_size = {"gru": (_np_gru_step, 1), "lstm": (_np_lstm_step, 2)}[name]
    x, mask = _x(), _mask()
    real = np.asarray(mask)[..., None]
    small, full = _module(name), _module(name, hidden_dim=0)  # H = 6 (projected back), H = d
    for causal in (True, False):
        # the contract module with its initial parameters, padded and not
        params = _variables(small, causal)["params"]
        assert "output" in params
        ref = _np_recurrent(step, carry_size, params, x, mask, causal)
        out = np.where(real, _run(small, x, mask, causal), 0)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"causal={causal}")
        unpadded = _np_recurrent(step, carry_size, params, x, None, causal)
        np.testing.assert_allclose(_run(small, x, None, causal), unpadded, rtol=1e-5, atol=1e-5)
        # hidden_dim = 0: H = d_model and no output projection
        variables = _random_variables(full, causal)
        assert "output" not in variables["params"]
        ref = _np_recurrent(step, carry_size, variables["params"], x, mask, causal)
        out = _apply(full, variables, x, mask, causal)[0]
        np.testing.assert_allclose(np.where(real, out, 0), ref, rtol=1e-5, atol=1e-5)
    assert small.state_size(D) == carry_size * 6 and full.state_size(D) == carry_size * D


def test_recurrent_flops_and_lstm_forget_bias():
    h, d = 6, D
    gru, lstm = _module("gru"), _module("lstm")
    assert gru.flops(L, L, d) == 2 * L * 3 * h * (d + h) + 2 * L * h * d
    assert gru.flops(L, L, d, causal=False) == 2 * (2 * L * 3 * h * (d + h)) + 2 * L * h * d
    assert lstm.flops(L, L, h) == 2 * L * 4 * h * (h + h)  # hidden_dim == d_model: no output
    bias = np.asarray(_variables(lstm, True)["params"]["forward_input"]["bias"]).reshape(4, h)
    np.testing.assert_array_equal(bias, np.eye(4)[1][:, None] * np.ones(h))  # (i, f, g, o)


def _np_gelu(a):  # the tanh approximation (flax's nn.gelu default)
    return 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))


@pytest.mark.parametrize("length", [L, MAX_LENGTH])
def test_mlp_mixer_matches_numpy(length):
    module = _module("mlp_mixer")
    hidden = module.token_mlp_dim
    x, mask = _x(length=length), _mask(length=length)
    # MADE degrees: unit f reads positions s <= deg(f) and feeds outputs t >= deg(f)
    deg = np.array([f * MAX_LENGTH // hidden for f in range(hidden)])
    pos = np.arange(length)
    for causal in (False, True):
        p = _np(_variables(module, causal)["params"])
        w1, w2 = p["token_in"][:length], p["token_out"][:, :length]  # [L, F], [F, L]
        if causal:
            w1 = w1 * (pos[:, None] <= deg[None, :])
            w2 = w2 * (deg[:, None] <= pos[None, :])
        for m in (None, mask) if length == L else (mask,):  # None: compiled already at L
            xs = np.asarray(x, np.float64) * (1.0 if m is None else np.asarray(m)[..., None])
            hid = _np_gelu(np.einsum("bsc,sf->bfc", xs, w1) + p["token_in_bias"][:, None])
            ref = np.einsum("bfc,ft->btc", hid, w2) + p["token_out_bias"][:length, None]
            np.testing.assert_allclose(_run(module, x, m, causal), ref, rtol=1e-5, atol=1e-5)
    if length == L:  # the causal form still mixes: the last output reads the first input
        moved = _run(module, x.at[:, 0].add(1.0), causal=True)
        assert not np.allclose(moved[:, -1], _run(module, x, causal=True)[:, -1])
    assert module.flops(L, L, D) == 4 * L * hidden * D and module.state_size(D) == hidden * D


def test_identity_is_a_position_wise_map():
    module = _module("identity")
    x, mask = _x(), _mask()
    p = _np(_variables(module, True)["params"]["projection"])
    ref = np.asarray(x, np.float64) @ p["kernel"] + p["bias"]
    for causal in (True, False):
        np.testing.assert_allclose(_run(module, x, mask, causal), ref, rtol=1e-5, atol=1e-5)
    assert module.flops(L, L, D) == 2 * L * D * D and module.state_size(D) == 0
    bare = _module("identity", projection=False)
    assert not _variables(bare, True)  # no parameters at all
    for dtype in (jnp.float32, jnp.bfloat16):
        xd = x.astype(dtype)
        out = bare.apply({}, xd, mask=mask, causal=True)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, xd)
    assert bare.flops(L, L, D) == 0 and bare.state_size(D) == 0
