"""Mixed precision (model.dtype) and the memory options (model.remat, model.scan_layers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnjax import config as config_lib
from attnjax import hardware, heatmaps, models, steps, tasks, train
from tests.conftest import tiny_config


def _setup(**overrides):
    config = config_lib.resolve(tiny_config(**overrides))
    task = tasks.create(config.task.name, **{k: v for k, v in config.task.items() if k != "name"})
    return config, task, models.build(config.model, task)


def test_auto_dtype_is_bfloat16_on_accelerators_and_float32_on_cpu():
    assert hardware.compute_dtype("auto", "gpu") == "bfloat16"
    assert hardware.compute_dtype("auto", "tpu") == "bfloat16"
    assert hardware.compute_dtype("auto", "cpu") == "float32"
    assert hardware.compute_dtype("float32", "tpu") == "float32"  # an explicit choice wins
    config, _, model = _setup()
    assert config.model.dtype == "auto"  # the config stays machine-independent
    assert model.dtype == jnp.float32  # this test runs on CPU


def test_bfloat16_computes_in_bfloat16_with_float32_params_state_and_logits():
    config, task, model = _setup(**{"model.dtype": "bfloat16"})
    batch = task.batch("train", 0, 4, 0)
    tx = steps.make_optimizer(config)
    state = steps.init_state(config, model, tx, batch)
    apply = lambda p: model.apply({"params": p}, batch["inputs"], **steps.model_inputs(batch))
    assert "bf16" in str(jax.make_jaxpr(apply)(state.params))  # the Blocks' matmuls
    loss = lambda p: task.loss_and_metrics(apply(p), batch)[0]
    logits, (value, grads) = jax.jit(lambda p: (apply(p), jax.value_and_grad(loss)(p)))(
        state.params)
    assert logits.dtype == value.dtype == jnp.float32  # the LM head and the loss in float32
    float32 = {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.params)} == float32
    assert {x.dtype for x in jax.tree.leaves(grads)} == float32  # so AdamW updates float32
    assert {x.dtype for x in jax.tree.leaves(state.opt_state)} <= float32 | {jnp.dtype("int32")}


@pytest.mark.slow
def test_bfloat16_mqar_learns_like_float32(tmp_path):
    """150 steps, mid-training (accuracy ~0.7, far from saturated): bfloat16 compute ends
    within 0.05 accuracy of float32 (measured: 0.004)."""
    accuracy = {}
    for dtype in ("float32", "bfloat16"):
        config = tiny_config(num_train_steps=150, eval_every_steps=1000, batch_size=64,
                             checkpoint_every_steps=1000, warmup_steps=30, log_every_steps=50,
                             **{"model.num_layers": 2, "model.dtype": dtype})
        summary = train.train_and_evaluate(config, tmp_path / dtype)
        assert summary["status"] == "done" and summary["compute_dtype"] == dtype
        accuracy[dtype] = summary["final_metrics"]["eval/accuracy"]
    assert accuracy["float32"] > 0.5  # it learned (chance: 1/8)
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) < 0.05, accuracy


def _stacked(params, num_layers: int):
    """The unscanned model's params remapped to the scanned layout (layers stacked)."""
    stack = dict(params["stack"])
    blocks = [stack.pop(f"block_{i}") for i in range(num_layers)]
    stack["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return {**params, "stack": stack}


def test_remat_and_scan_layers_equal_the_plain_model():
    """Same parameters (stacked for scan) -> same loss and gradients."""
    layers = 3
    _, task, plain = _setup(**{"model.num_layers": layers})
    batch = task.batch("train", 0, 4, 0)
    inputs = steps.model_inputs(batch)
    params = jax.jit(plain.init)(jax.random.PRNGKey(0), batch["inputs"], **inputs)["params"]

    def loss(model, p):
        logits = model.apply({"params": p}, batch["inputs"], **inputs)
        return task.loss_and_metrics(logits, batch)[0]

    value, grads = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    for options in ({"model.remat": True}, {"model.scan_layers": True},
                    {"model.remat": True, "model.scan_layers": True}):
        _, _, other = _setup(**{"model.num_layers": layers, **options})
        scanned = options.get("model.scan_layers", False)
        mapped = _stacked(params, layers) if scanned else params
        shapes = jax.eval_shape(other.init, jax.random.PRNGKey(0), batch["inputs"], **inputs)
        assert jax.tree.map(lambda x: x.shape, shapes["params"]) == jax.tree.map(
            jnp.shape, mapped), options  # remat keeps the parameter tree; scan stacks layers
        value2, grads2 = jax.jit(jax.value_and_grad(lambda p, m=other: loss(m, p)))(mapped)
        np.testing.assert_allclose(value2, value, rtol=1e-6, err_msg=str(options))
        expected = _stacked(grads, layers) if scanned else grads
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     grads2, expected)


def test_scanned_model_heatmaps_name_every_layer():
    _, task, plain = _setup(**{"model.num_layers": 2})
    _, _, scanned = _setup(**{"model.num_layers": 2, "model.scan_layers": True})
    batch = {k: v[:1] for k, v in task.batch("eval", 0, 4, 0).items()}
    params = jax.jit(plain.init)(jax.random.PRNGKey(0), batch["inputs"],
                                 **steps.model_inputs(batch))["params"]
    expected = heatmaps.collect_weights(plain, params, batch)
    got = heatmaps.collect_weights(scanned, _stacked(params, 2), batch)
    assert list(got) == list(expected) == ["self_attention_layer0", "self_attention_layer1"]
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
