"""The backbone: heads, positional encodings, and every variant inside a Block."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import attention, models, steps, tasks
from attnjax import config as config_lib
from attnjax.models.positional import sinusoidal_table


def _small(name):
    """A variant's small_settings minus Block-level options (the model sets those)."""
    return {k: v for k, v in attention.get(name).small_settings.items()
            if k not in attention.BLOCK_OPTIONS}


def _model(head="lm", causal=True, positional="learned", **model_overrides):
    """A small Transformer whose Blocks are what `config.model` + overrides describe."""
    cfg = config_lib.apply_overrides(config_lib.defaults(), {
        "model.d_model": 16, "model.num_heads": 2, "model.mlp_dim": 32,
        **{f"model.{k}": v for k, v in model_overrides.items()}})
    cfg = config_lib.resolve(cfg)
    return models.Transformer(vocab_size=20, output_size=7, max_length=12, num_layers=2,
                              block=models.block_settings(cfg.model), head=head, causal=causal,
                              positional=positional)


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


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "none"])
def test_absolute_positional_encodings(positional):
    """Relative kinds (rope, alibi, t5_bias) only reweight identical values, so they are
    tested on their own below."""
    model = _model(positional=positional, causal=False)
    x = jnp.ones((1, 12), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), x)
    learned = "embedding" in params["params"]["stack"].get("positional", {})
    assert learned == (positional == "learned")
    if learned:  # initialised small (std 0.02): give it a visible signal
        params["params"]["stack"]["positional"]["embedding"] = jax.random.normal(
            jax.random.PRNGKey(2), (12, 16))
    out = model.apply(params, x)[0]  # [L, V]
    # identical tokens, no causality: only a positional signal tells positions apart
    spread = float(jnp.max(jnp.abs(out - out[0])))
    assert (spread > 1e-3) == (positional != "none"), spread


def test_rope_scores_depend_only_on_relative_position():
    from attnjax.models.positional import apply_rope

    rng = np.random.default_rng(0)
    q = jnp.asarray(np.broadcast_to(rng.standard_normal(8), (1, 10, 1, 8)), jnp.float32)
    k = jnp.asarray(np.broadcast_to(rng.standard_normal(8), (1, 10, 1, 8)), jnp.float32)
    scores = np.asarray(jnp.einsum("bqhd,bkhd->qk", apply_rope(q), apply_rope(k)))  # [L, L]
    for offset in range(-3, 4):
        diag = np.diagonal(scores, offset)
        np.testing.assert_allclose(diag, diag[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(apply_rope(q), axis=-1), np.linalg.norm(q, axis=-1),
                               rtol=1e-6)


@pytest.mark.parametrize("name", attention.names())
def test_every_variant_trains_inside_the_backbone(name):
    """30 steps of the real train_step on one fixed tiny batch (MQAR for causal variants,
    ListOps for bidirectional-only ones): the loss falls and gradients stay finite."""
    caps = attention.get(name).capabilities
    task_settings = ({"task.name": "mqar", "task.vocab_size": 16, "task.seq_len": 16,
                      "task.num_kv_pairs": 2} if caps.causal else
                     {"task.name": "listops", "task.seq_len": 32, "task.min_len": 8})
    config = config_lib.resolve(config_lib.apply_overrides(config_lib.defaults(), {
        "model.attention": name, "model.attention_kwargs": _small(name),
        "model.num_layers": 1, "model.d_model": 32, "model.mlp_dim": 64,
        "learning_rate": 1e-2, "warmup_steps": 1, "batch_size": 16, **task_settings,
    }))
    task = tasks.create(config.task.name,
                        **{k: v for k, v in config.task.items() if k != "name"})
    model = models.build(config.model, task)
    batch = task.batch("train", 0, 16, 0)  # one fixed batch: the loss must fall on it
    inputs = {k: batch[k] for k in models.INPUT_KEYS if k in batch}
    params = model.init(jax.random.PRNGKey(0), batch["inputs"], **inputs)
    tx = steps.make_optimizer(config)
    state = steps.TrainState(jnp.int32(0), params["params"], tx.init(params["params"]))
    step = jax.jit(jax.vmap(
        lambda s, b, h, r: steps.train_step(
            s, b, h, r, model=model, task=task, tx=tx,
            schedule=functools.partial(steps.lr_multiplier, num_train_steps=30)),
        in_axes=(None, None, None, None), axis_name="batch", axis_size=1,
    ))
    losses = []
    for _ in range(30):
        new, metrics = step(state, batch, steps.hparams_from(config), jax.random.PRNGKey(0))
        state = jax.tree.map(lambda x: x[0], new)
        losses.append(float(metrics["loss"][0][0] / metrics["loss"][1][0]))
        assert np.isfinite(float(metrics["grad_norm"][0][0]))
    assert losses[-1] < 0.8 * losses[0], losses


def test_alibi_bias_matches_the_paper():
    from attnjax.models.positional import alibi_bias, alibi_slopes

    np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    bias = np.asarray(alibi_bias(4, 5, 5))[0]  # [H, Lq, Lk]
    slopes = alibi_slopes(4)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                assert bias[h, i, j] == pytest.approx(-slopes[h] * abs(i - j))
    assert len(alibi_slopes(6)) == 6  # non powers of two interleave


def test_t5_buckets():
    from attnjax.models.positional import t5_buckets

    causal = t5_buckets(1, 300, False, 32, 128)[0]  # query 0 looking at keys 0..299
    assert causal[0] == 0 and (causal[1:] == 0).all()  # future keys share bucket 0 (masked)
    back = t5_buckets(300, 1, False, 32, 128)[:, 0]  # distance i - 0
    assert list(back[:16]) == list(range(16))  # exact for small distances
    assert (np.diff(back) >= 0).all() and back.max() == 31  # monotone, capped
    both = t5_buckets(1, 9, True, 32, 128)[0]
    assert both[0] == 0 and len(set(both[1:])) == 8 and (both[1:] >= 16).all()


@pytest.mark.parametrize("positional", ["rope", "alibi", "t5_bias"])
def test_relative_positions_reach_the_model(positional):
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 0, 20)
    model = _model(positional=positional)
    params = model.init(jax.random.PRNGKey(1), x)
    out = model.apply(params, x)
    base = _model(positional="none")
    shared = {"params": {k: v for k, v in params["params"].items()}}
    if positional == "t5_bias":
        shared["params"]["stack"] = {k: v for k, v in params["params"]["stack"].items()
                                     if k != "t5_bias"}
    ref = base.apply(shared, x)
    assert jnp.all(jnp.isfinite(out)) and float(jnp.max(jnp.abs(out - ref))) > 1e-4


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 0, 20)
    mha, gqa = _model(num_heads=4), _model(num_heads=4, num_kv_heads=4)
    params = mha.init(jax.random.PRNGKey(1), x)
    np.testing.assert_array_equal(mha.apply(params, x), gqa.apply(params, x))
    mqa = _model(num_heads=4, num_kv_heads=1)
    p = mqa.init(jax.random.PRNGKey(1), x)["params"]["stack"]["block_0"]["mixing"]
    assert p["query"]["kernel"].shape == (16, 4, 4) and p["key"]["kernel"].shape == (16, 1, 4)
    assert jnp.all(jnp.isfinite(mqa.apply({"params": mqa.init(jax.random.PRNGKey(1), x)[
        "params"]}, x)))


def test_block_options_reach_the_variant():
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 12), 0, 20)
    base = _model()
    params = base.init(jax.random.PRNGKey(1), x)
    out = base.apply(params, x)
    capped = _model(logit_soft_cap=0.01).apply(params, x)  # a tiny cap flattens the weights
    assert float(jnp.max(jnp.abs(out - capped))) > 1e-4
    qk = _model(qk_norm=True)
    qk_params = qk.init(jax.random.PRNGKey(1), x)
    assert "query_norm" in qk_params["params"]["stack"]["block_0"]["mixing"]
    dropped = _model(attention_dropout_rate=0.5)
    a = dropped.apply(params, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    b = dropped.apply(params, x, deterministic=True)
    np.testing.assert_array_equal(b, out)  # no dropout at evaluation
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4


CROSS = [n for n in attention.names() if attention.get(n).capabilities.cross_attention
         and attention.get(n).capabilities.level == "attention"]


@pytest.mark.parametrize("name", CROSS)
def test_every_cross_capable_variant_serves_as_cross_attention(name):
    cfg = config_lib.resolve(config_lib.apply_overrides(config_lib.defaults(), {
        "model.d_model": 16, "model.num_heads": 2, "model.mlp_dim": 32, "model.num_layers": 1,
        "model.cross_attention": name,
        "model.cross_attention_kwargs": _small(name),
        "task.name": "reverse", "task.max_len": 6, "task.min_len": 2}))
    task = tasks.create("reverse", max_len=6, min_len=2)
    model = models.build(cfg.model, task)
    batch = task.batch("train", 0, 4, 0)
    inputs = {k: batch[k] for k in models.INPUT_KEYS if k in batch}
    params = model.init(jax.random.PRNGKey(0), batch["inputs"], **inputs)

    def loss(p):
        logits = model.apply(p, batch["inputs"], **inputs)  # [B, Lt, V]
        return task.loss_and_metrics(logits, batch)[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    cross = grads["params"]["decoder"]["block_0"]["cross"]
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(cross))
    assert float(sum(jnp.sum(jnp.abs(g)) for g in jax.tree.leaves(cross))) > 0
    # the source reaches the decoder only through cross attention: changing it changes logits
    other = {**inputs, "padding_mask": inputs["padding_mask"]}
    changed = model.apply(params, (batch["inputs"] + 1) % task.vocab_size, **other)
    assert float(jnp.max(jnp.abs(changed - model.apply(params, batch["inputs"], **inputs)))) > 0


def _param_count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_mlp_dim_zero_drops_the_mlp_and_its_norm_and_the_model_trains(tmp_path):
    from attnjax import train
    from attnjax.models.budget import budget
    from tests.conftest import tiny_config

    d, f, layers = 16, 32, 2
    tokens = jnp.zeros((1, 12), jnp.int32)
    counts = {}
    for mlp in (f, 0):
        params = _model(mlp_dim=mlp).init(jax.random.PRNGKey(0), tokens)["params"]
        counts[mlp] = _param_count(params)
        names = set(params["stack"]["block_0"])
        assert ({"mlp_norm", "mlp_in", "mlp_out"} <= names) == (mlp > 0), names
    # per layer: the MLP's norm (2d), d -> f (d·f + f) and f -> d (f·d + d)
    assert counts[f] - counts[0] == layers * (2 * d + d * f + f + f * d + d)

    config = config_lib.resolve(tiny_config(**{"model.mlp_dim": 0}))
    task = tasks.create(config.task.name, **{k: v for k, v in config.task.items() if k != "name"})
    with_mlp = config_lib.resolve(tiny_config())
    per_token = 4 * with_mlp.model.d_model * with_mlp.model.mlp_dim * with_mlp.model.num_layers
    assert (budget(with_mlp.model, task)["flops_per_token"]
            - budget(config.model, task)["flops_per_token"]) == pytest.approx(per_token)
    summary = train.train_and_evaluate(tiny_config(**{"model.mlp_dim": 0,
                                                       "num_train_steps": 40}), tmp_path)
    assert summary["status"] == "done"
    assert summary["final_metrics"]["train/loss"] < np.log(16) - 0.3  # below chance

    with pytest.raises(config_lib.ConfigError, match="mlp_dim must be >= 0"):
        config_lib.resolve(tiny_config(**{"model.mlp_dim": -1}))
