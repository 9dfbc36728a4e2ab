"""The recurrent-form contract, run over every variant that declares `recurrent_settings`:

(a) its training form (its `small_settings`: chunk 5 at L = 13, so chunk boundaries fall mid-
    sequence and the last chunk is partial) equals its recurrent form in float64 (x64 enabled
    for the test only), to ~1e-10 relative, on random inputs with the same variables;
(b) the recurrent form, run causally, sows `intermediates/recurrent_state` whose leaves have a
    leading batch axis and whose floats, per sequence (and per head at the attention level),
    number exactly `state_size(head_dim)` (head_dim = d_model for mixers);
(c) the recurrent form is causal: the output at t is bit-identical when inputs after t change.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention

B, L, H, D = 2, 13, 2, 8  # L = 13: not a multiple of the chunk 5 of small_settings
NAMES = [n for n in attention.names() if attention.get(n).recurrent_settings is not None]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _is_mixer(name):
    return attention.get(name).capabilities.level == "mixer"


def _inputs(name, seed=0, dtype=jnp.float64):
    """(q, k, v) [B, L, H, D] for attention-level variants, (x,) [B, L, D] for mixers."""
    rng = np.random.default_rng(seed)
    shapes = [(B, L, D)] if _is_mixer(name) else [(B, L, H, D)] * 3
    return tuple(jnp.asarray(rng.standard_normal(s), dtype) for s in shapes)


def _mask(name):
    """Row 0: its last 3 positions padded; row 1: none (None if the variant takes no mask)."""
    if not attention.get(name).capabilities.padding_mask:
        return None
    return jnp.asarray(np.arange(L)[None, :] < np.array([[L - 3], [L]]))


def _modules(name):
    cls = attention.get(name)
    small = {**cls.small_settings, **({"max_length": 16} if _is_mixer(name) else {})}
    return attention.create(name, **small), attention.create(
        name, **{**small, **cls.recurrent_settings})


@functools.cache
def _forms(name):
    """Jitted (training form, recurrent form with its intermediates) and shared variables:
    the initialised ones plus noise, so no bias or gate sits at a special value like 0."""
    train, recur = _modules(name)
    mask = _mask(name)
    with jax.enable_x64(True):
        variables = jax.jit(lambda *xs: train.init(jax.random.key(0), *xs, mask=mask,
                                                   causal=True))(*_inputs(name))
        variables = {c: x for c, x in variables.items() if c != "intermediates"}
        rng = np.random.default_rng(1)
        variables = jax.tree.map(
            lambda p: p + jnp.asarray(0.1 * rng.standard_normal(p.shape), p.dtype), variables)

    @jax.jit
    def run_train(*xs):
        return train.apply(variables, *xs, mask=mask, causal=True)

    @jax.jit
    def run_recurrent(*xs):
        return recur.apply(variables, *xs, mask=mask, causal=True, mutable="intermediates")

    return run_train, run_recurrent


def _real(name):
    """Positions compared: all for attention-level variants (a padded query still reads real
    keys); the real ones for mixers (their padded outputs are unspecified)."""
    mask = _mask(name)
    if mask is None or not _is_mixer(name):
        return np.ones((B, L, 1), bool)
    return np.asarray(mask)[..., None]


@pytest.mark.parametrize("name", NAMES)
def test_training_form_equals_recurrent_form_float64(name):
    run_train, run_recurrent = _forms(name)
    xs = _inputs(name)
    trained = np.asarray(run_train(*xs))
    stepped = np.asarray(run_recurrent(*xs)[0])
    assert trained.dtype == stepped.dtype == np.float64
    real = _real(name).reshape(B, L, *([1] * (trained.ndim - 2)))
    trained, stepped = np.where(real, trained, 0), np.where(real, stepped, 0)
    scale = np.abs(trained).max()
    assert scale > 0
    np.testing.assert_allclose(stepped, trained, rtol=1e-10, atol=1e-10 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_state_counts_state_size(name):
    _, run_recurrent = _forms(name)
    _, recorded = run_recurrent(*_inputs(name))
    (state,) = recorded["intermediates"]["recurrent_state"]  # sow stores a tuple
    leaves = jax.tree.leaves(state)
    assert leaves and all(leaf.shape[0] == B for leaf in leaves), jax.tree.map(jnp.shape, state)
    # floats only: e.g. based's w slot flags are booleans (bookkeeping, like a token counter)
    floats = sum(leaf.size for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.inexact))
    per = B if _is_mixer(name) else B * H
    assert floats % per == 0
    assert floats // per == _modules(name)[1].state_size(D)


@pytest.mark.parametrize("name", NAMES)
def test_recurrent_form_is_causal(name):
    _, run_recurrent = _forms(name)
    xs, noise = _inputs(name), _inputs(name, seed=7)
    base = np.asarray(run_recurrent(*xs)[0])
    for t in (0, 4, 5, 9, L - 2):
        future = (jnp.arange(L) > t).reshape(1, L, *([1] * (xs[0].ndim - 2)))
        moved = [jnp.where(future, 10 * n, x) for n, x in zip(noise, xs, strict=True)]
        out = np.asarray(run_recurrent(*moved)[0])
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1], err_msg=f"t = {t}")
