"""grad_accum_steps: micro-batches in a scan give the whole batch's update with less memory."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from attnjax import config as config_lib
from attnjax import steps
from attnjax.input_pipeline import DataSource, PackSource
from attnjax.parallel import replicate, shard
from attnjax.registry import ConfigError
from tests.conftest import tiny_config


def _train(accum: int, num_steps: int = 3, **overrides):
    """(params after num_steps, metrics of the last step, compiled step) of one run."""
    config = config_lib.resolve(tiny_config(grad_accum_steps=accum, **overrides))
    task, _, model, devices, tx, p_train = steps.setup(config)
    source = PackSource((DataSource(task, "train", config.batch_size, config.data_seed),))
    first = source.members[0].host_batch(0)
    state = replicate(steps.stack([steps.init_state(config, model, tx, first)]), devices)
    hparams, rngs = steps.pack_hparams([config]), steps.pack_rngs([config])
    compiled = p_train.lower(state, shard(source.host_batch(0), devices), hparams,
                             rngs).compile()
    metrics = None
    for i in range(num_steps):
        state, metrics = compiled(state, shard(source.host_batch(i), devices), hparams, rngs)
    return jax.device_get(state.params), jax.device_get(metrics), compiled


def test_micro_batches_give_the_whole_batch_update():
    # adam_eps=1: updates proportional to the gradients (with the default eps Adam's first steps
    # are ~sign(g), which turns float rounding in near-zero gradients into +-lr differences)
    full, full_metrics, _ = _train(1, adam_eps=1.0)
    accumulated, metrics, _ = _train(4, adam_eps=1.0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
                 accumulated, full)
    for name in ("loss", "accuracy", "grad_norm"):  # (sum, count) over the whole batch either way
        np.testing.assert_allclose(metrics[name][0], full_metrics[name][0], rtol=1e-5)
        np.testing.assert_array_equal(metrics[name][1], full_metrics[name][1])


def test_micro_batches_take_less_activation_memory():
    # activations dominate at this size (batch 64 x L 128, one layer)
    shape = {"batch_size": 64, "task.seq_len": 128, "task.num_kv_pairs": 8, "task.vocab_size": 64}
    *_, whole = _train(1, num_steps=0, **shape)
    *_, quarter = _train(4, num_steps=0, **shape)
    assert (quarter.memory_analysis().temp_size_in_bytes
            < 0.5 * whole.memory_analysis().temp_size_in_bytes)


@pytest.mark.parametrize("accum, message", [(0, "must be >= 1"), (3, "divisible by grad_accum")])
def test_batch_must_split_into_micro_batches(accum, message):
    config = config_lib.resolve(tiny_config(grad_accum_steps=accum))
    with pytest.raises(ConfigError, match=message):
        steps.devices_for(config)


def test_the_out_of_memory_reason_names_the_micro_batches_that_fit():
    from attnjax import train

    config = config_lib.resolve(tiny_config(batch_size=64))
    gib = 2**30
    reason = train.oom_reason(config, needs=20 * gib, free=8 * gib)
    assert "grad_accum_steps=4 (now 1" in reason, reason  # 20 / 4 = 5 GiB < 0.8 x 8
    # nothing fits even one example per micro-batch: not offered
    assert "grad_accum_steps" not in train.oom_reason(config, needs=2000 * gib, free=gib)


def test_micro_batches_on_two_devices_give_the_one_device_update():
    """pmap over 2 devices, 2 micro-batches each: the weight is summed over devices and
    micro-batches, so the update equals one device's whole-batch step."""
    from tests.conftest import run_python

    code = """
import jax, numpy as np
from tests.test_grad_accum import _train
one, _, _ = _train(1, num_steps=2, adam_eps=1.0)
two, _, _ = _train(2, num_steps=2, adam_eps=1.0, num_devices=2)
worst = max(float(np.max(np.abs(a[0] - b[0]))) for a, b in
            zip(jax.tree.leaves(one), jax.tree.leaves(two), strict=True))
assert worst < 1e-5, worst
print("ok", worst)
"""
    proc = run_python(code, devices=2)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
