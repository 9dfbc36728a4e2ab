"""model.short_conv: a depthwise convolution over the sequence on q, k, v after their
projections (on x for mixer-level variants), causal on causal calls and centred otherwise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import config as config_lib
from attnjax import models, tasks
from attnjax.models.budget import budget
from attnjax.registry import ConfigError

B, L, D, H, W = 2, 11, 8, 2, 3


def _sublayer(attention, width=W, **settings):
    return models.MixingSublayer(d_model=D, num_heads=H, attention=attention, short_conv=width,
                                 attention_kwargs=tuple(settings.items()), max_length=16)


def _x(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, L, D)), jnp.float32)


def _mask():
    mask = np.ones((B, L), bool)
    mask[0, -3:] = False
    mask[1, :2] = mask[1, -1] = False
    return jnp.asarray(mask)


def _run(module, x, mask=None, causal=True, params=None):
    if params is None:
        params = module.init(jax.random.key(0), x, padding_mask=mask, causal=causal)
    return module.apply(params, x, padding_mask=mask, causal=causal), params


def _np_conv(x, taps, causal):
    """out_t = Σ_i taps[i] x_{t-i} (causal) or Σ_i taps[i] x_{t-i+w//2} (centred), zeros
    outside the sequence; x [B, L, ...], taps [w, ...]."""
    width, out = len(taps), np.zeros(x.shape)
    ahead = 0 if causal else width // 2
    for t in range(x.shape[1]):
        for i in range(width):
            if 0 <= t - i + ahead < x.shape[1]:
                out[:, t] += taps[i] * x[:, t - i + ahead]
    return out


@pytest.mark.parametrize("causal", [True, False])
def test_mixer_input_is_the_direct_depthwise_conv(causal):
    """With the identity mixer (no projection) the sublayer's output is the convolution."""
    module = _sublayer("identity", projection=False)
    x, mask = _x(), _mask()
    out, params = _run(module, x, mask, causal)
    taps = np.asarray(params["params"]["input_conv"], np.float64)  # [w, D]
    real = np.asarray(mask, np.float64)[..., None]
    ref = _np_conv(np.asarray(x, np.float64) * real, taps, causal)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_softmax_sublayer_with_conv_matches_numpy(causal):
    module = _sublayer("softmax")
    x, mask = _x(), _mask()
    out, params = _run(module, x, mask, causal)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    real = np.asarray(mask)
    xs = np.asarray(x, np.float64)
    qkv = []
    for name in ("query", "key", "value"):
        z = np.einsum("bld,dhe->blhe", xs, p[name]["kernel"]) + p[name]["bias"]  # [B, L, H, Dh]
        qkv.append(_np_conv(z * real[..., None, None], p[f"{name}_conv"], causal))
    q, k, v = qkv
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(D // H)
    ok = real[:, None, None, :] & (np.tril(np.ones((L, L), bool)) if causal else True)
    e = np.where(ok, np.exp(logits - logits.max(-1, keepdims=True)), 0.0)
    total = e.sum(-1, keepdims=True)
    w = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    o = np.einsum("bhij,bjhe->bihe", w, v)
    ref = np.einsum("bihe,hed->bid", o, p["out"]["kernel"]) + p["out"]["bias"]
    rows = real if not causal else real & (np.cumsum(real, 1) > 0)  # queries that see a key
    np.testing.assert_allclose(np.asarray(out)[rows], ref[rows], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["softmax", "gru"])
def test_causal_and_padding_exact(attention):
    """Causal: outputs up to t ignore inputs after t (bit-identical). Both modes: padded inputs
    reach no real position."""
    module = _sublayer(attention)
    x, mask, noise = _x(), _mask(), _x(seed=3) * 10
    for causal in (True, False):
        base, params = _run(module, x, mask, causal)
        moved = _run(module, jnp.where(mask[..., None], x, noise), mask, causal, params)[0]
        np.testing.assert_array_equal(np.asarray(moved)[np.asarray(mask)],
                                      np.asarray(base)[np.asarray(mask)])
    base, params = _run(module, x, None, True)
    for t in (0, 4, L - 2):
        future = (jnp.arange(L) > t)[None, :, None]
        moved = _run(module, jnp.where(future, noise, x), None, True, params)[0]
        np.testing.assert_array_equal(moved[:, : t + 1], base[:, : t + 1])
    assert ("input_conv" if attention == "gru" else "query_conv") in params["params"]


def test_config_budget_and_self_mixing_only():
    cfg = config_lib.apply_overrides(config_lib.defaults(), {"model.short_conv": -1})
    with pytest.raises(ConfigError, match="short_conv"):
        config_lib.resolve(cfg)
    cfg = config_lib.resolve(config_lib.apply_overrides(config_lib.defaults(), {
        "model.short_conv": 4, "model.attention": "linear"}))
    off = config_lib.resolve(config_lib.apply_overrides(config_lib.defaults(), {
        "model.attention": "linear"}))
    task = tasks.create(cfg.task.name, **{k: v for k, v in cfg.task.items() if k != "name"})
    on_budget, off_budget = budget(cfg.model, task), budget(off.model, task)
    layers, d = cfg.model.num_layers, cfg.model.d_model
    assert on_budget["state_size"] - off_budget["state_size"] == layers * 3 * 3 * d
    assert on_budget["flops_per_token"] - off_budget["flops_per_token"] == pytest.approx(
        layers * 2 * 4 * 3 * d)
    with pytest.raises(ValueError, match="self mixing"):
        jax.eval_shape(lambda: _sublayer("softmax").init(jax.random.key(0), _x(), context=_x(1)))
    # an encoder-decoder: the short conv sits in self mixing only, never in cross attention
    model = models.EncoderDecoder(vocab_size=9, output_size=9, max_length=L, max_target_length=5,
                                  block=models.block_settings(cfg.model), num_layers=1)
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((B, L), int), decoder_inputs=jnp.zeros((B, 5), int)))
    decoder = shapes["params"]["decoder"]["block_0"]
    assert "query_conv" in decoder["mixing"] and "query_conv" not in decoder["cross"]
    assert shapes["params"]["encoder"]["block_0"]["mixing"]["key_conv"].shape == (4, 2, 32)
