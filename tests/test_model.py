"""The backbone: heads, positional encodings, and every variant inside a Block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention, models, tasks, train
from attnjax import config as config_lib
from attnjax.models.positional import sinusoidal_table


def _model(**kw):
    base = dict(vocab_size=20, output_size=7, max_length=12, num_layers=2, d_model=16,
                num_heads=2, mlp_dim=32)
    return models.Transformer(**{**base, **kw})


def test_lm_logits_only_at_requested_positions_equal_full_logits():
    model = _model(head="lm")
    x = jax.random.randint(jax.random.PRNGKey(0), (3, 12), 0, 20)
    params = model.init(jax.random.PRNGKey(1), x)
    full = model.apply(params, x)  # [B, L, V]
    positions = jnp.array([[0, 5, 11], [2, 2, 3], [11, 10, 9]])
    picked = model.apply(params, x, positions=positions)  # [B, T, V]
    assert full.shape == (3, 12, 7) and picked.shape == (3, 3, 7)
    np.testing.assert_allclose(picked, jnp.take_along_axis(full, positions[..., None], 1),
                               rtol=1e-6, atol=1e-6)


def test_classification_ignores_padded_tokens():
    model = _model(head="classification", causal=False)
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 1, 20)
    mask = jnp.arange(12)[None] < jnp.array([[7], [12]])
    params = model.init(jax.random.PRNGKey(1), x, padding_mask=mask)
    out = model.apply(params, x, padding_mask=mask)
    x2 = x.at[0, 7:].set(3)  # change only padded tokens of row 0
    np.testing.assert_allclose(out, model.apply(params, x2, padding_mask=mask), atol=1e-6)
    assert out.shape == (2, 7)


def test_sinusoidal_table_matches_formula():
    t = sinusoidal_table(10, 8)
    pos, i = 3, 2  # channel 2*i uses frequency 1 / 10000^(2i/d)
    assert t[pos, 2 * i] == pytest.approx(np.sin(pos / 10000 ** (2 * i / 8)), abs=1e-6)
    assert t[pos, 2 * i + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * i / 8)), abs=1e-6)


@pytest.mark.parametrize("positional", config_lib.POSITIONALS)
def test_positional_encodings(positional):
    model = _model(positional=positional, causal=False)
    x = jnp.ones((1, 12), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), x)
    learned = "embedding" in params["params"].get("positional", {})
    assert learned == (positional == "learned")
    if learned:  # initialised small (std 0.02): give it a visible signal
        params["params"]["positional"]["embedding"] = jax.random.normal(
            jax.random.PRNGKey(2), (12, 16))
    out = model.apply(params, x)[0]  # [L, V]
    # identical tokens, no causality: only a positional signal tells positions apart
    spread = float(jnp.max(jnp.abs(out - out[0])))
    assert (spread > 1e-3) == (positional != "none"), spread


@pytest.mark.parametrize("name", attention.names())
def test_every_variant_trains_inside_the_backbone(name):
    """A few steps of the real train_step on a tiny MQAR batch: loss falls, grads are finite."""
    config = config_lib.resolve(config_lib.apply_overrides(config_lib.defaults(), {
        "model.attention": name, "model.num_layers": 1, "model.d_model": 32,
        "model.mlp_dim": 64, "task.vocab_size": 16, "task.seq_len": 16,
        "task.num_kv_pairs": 2, "learning_rate": 1e-2, "warmup_steps": 1, "batch_size": 16,
    }))
    task = tasks.create("mqar", **{k: v for k, v in config.task.items() if k != "name"})
    model = models.build(config.model, task)
    batch = task.batch("train", 0, 16, 0)  # one fixed batch: the loss must fall on it
    params = model.init(jax.random.PRNGKey(0), batch["inputs"], positions=batch["positions"])
    tx = train.make_optimizer(config)
    state = train.TrainState(jnp.int32(0), params["params"], tx.init(params["params"]))
    step = jax.jit(jax.vmap(
        lambda s, b, h, r: train.train_step(
            s, b, h, r, model=model, task=task, tx=tx,
            schedule=lambda i: train.lr_multiplier(i, num_train_steps=30, warmup_steps=1)),
        in_axes=(None, None, None, None), axis_name="batch", axis_size=1,
    ))
    losses = []
    for _ in range(30):
        new, metrics = step(state, batch, train.hparams_from(config), jax.random.PRNGKey(0))
        state = jax.tree.map(lambda x: x[0], new)
        loss = metrics["loss"][0][0] / metrics["loss"][1][0]
        losses.append(float(loss))
        assert np.isfinite(float(metrics["grad_norm"][0][0]))
    assert losses[-1] < 0.8 * losses[0], losses
