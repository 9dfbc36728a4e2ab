"""Finite train pools (`train_examples` = N > 0): every synthetic task reads a fixed set of N
examples in per-epoch permutations, bit-identically on any number of shards, resumably, apart
from its eval and test sets, and through the data cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnjax import config as config_lib
from attnjax import data_cache, tasks, train
from attnjax.input_pipeline import DataSource, PackSource, Prefetcher
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir
from attnjax.tasks import _epochs
from tests.conftest import tiny_config

SYNTHETIC = [n for n in tasks.names() if not tasks.get(n).needs_data]
B, N = 8, 20  # N not a multiple of B: batches straddle epochs


def _rows(batch) -> list[bytes]:
    """Each row of a batch (all its arrays) as one hashable example."""
    return [b"|".join(np.ascontiguousarray(batch[k][i]).tobytes() for k in sorted(batch))
            for i in range(len(batch["inputs"]))]


def _stream(source, batches) -> list[bytes]:
    return [r for i in range(batches) for r in _rows(source.host_batch(i))]


def test_synthetic_tasks_are_found():
    assert {"mqar", "copy", "sort"} <= set(SYNTHETIC)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_each_epoch_reads_the_pool_once_in_a_new_order(name):
    task = tasks.create(name)
    source = DataSource(task, "train", B, seed=3, host=0, num_hosts=1, train_examples=N)
    pool = _rows(_epochs.pool(task, 3, N))
    stream = _stream(source, -(-3 * N // B))  # 3 epochs and a bit
    epochs = [stream[e * N:(e + 1) * N] for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == sorted(pool)  # exactly the N pool examples, each once
    assert len({tuple(e) for e in epochs}) == 3  # reshuffled every epoch
    assert len(set(stream)) == len(set(pool))
    # the pool is the same whatever the batch size, and a smaller pool is a prefix of a larger
    assert _rows(_epochs.pool(task, 3, 2 * N))[:N] == pool
    assert sorted(_stream(DataSource(task, "train", 4, seed=3, host=0, num_hosts=1,
                                     train_examples=N), N // 4)) == sorted(pool)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_pool_batches_do_not_depend_on_shards_and_are_deterministic(name):
    task = tasks.create(name)
    one = DataSource(task, "train", B, seed=5, host=0, num_hosts=1, train_examples=N)
    for index in (0, 2, 7):
        whole = one.host_batch(index)
        halves = [DataSource(task, "train", B, seed=5, host=h, num_hosts=2, train_examples=N
                             ).host_batch(index) for h in (0, 1)]
        for key in whole:
            joined = np.concatenate([h[key] for h in halves])
            assert joined.dtype == whole[key].dtype and joined.tobytes() == whole[key].tobytes()
    again = DataSource(tasks.create(name), "train", B, seed=5, host=0, num_hosts=1,
                       train_examples=N)
    assert _stream(again, 3) == _stream(one, 3)
    other_seed = DataSource(task, "train", B, seed=6, host=0, num_hosts=1, train_examples=N)
    assert _stream(other_seed, 3) != _stream(one, 3)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_eval_and_test_sets_share_no_example_with_the_pool(name):
    task = tasks.create(name)
    pool = set(_rows(_epochs.pool(task, 0, 256)))
    for split in ("eval", "test"):
        held_out = {r for i in range(4) for r in _rows(task.batch(split, i, 32, seed=0))}
        assert not pool & held_out, split


def test_resuming_mid_epoch_reads_the_same_stream_and_records_the_position():
    task = tasks.create("mqar")
    source = DataSource(task, "train", B, seed=1, host=0, num_hosts=1, train_examples=N)
    pack = PackSource((source,))
    with Prefetcher(pack, 0, 9) as batches:
        full = [b for _, b in batches]
    with Prefetcher(pack, 4, 9) as batches:  # resumed at step 4: stream position 32 = 1·N + 12
        resumed = [b for _, b in batches]
    for a, b in zip(full[4:], resumed, strict=True):
        assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert source.state(4)["position"] == {"epoch": 1, "offset": 12}
    assert "position" not in DataSource(task, "train", B, seed=1, host=0, num_hosts=1).state(4)


def test_data_cache_keeps_pool_batches_bit_identical(tmp_path):
    task = tasks.create("mqar")
    source = DataSource(task, "train", B, seed=2, host=0, num_hosts=1, train_examples=N)
    cached = data_cache.cached(source, 0, 6, root_dir=tmp_path)
    assert isinstance(cached, data_cache.CachedSource)
    for i in range(6):
        a, b = cached.host_batch(i), source.host_batch(i)
        assert all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a)
    infinite = data_cache.BatchCache(DataSource(task, "train", B, seed=2, host=0, num_hosts=1),
                                     tmp_path)
    assert infinite.dir != cached.cache.dir  # the pool is another stream: another entry
    assert "train_examples" not in infinite.info  # old entries keep their keys


def test_train_examples_is_checked():
    base = config_lib.defaults()
    with pytest.raises(ConfigError, match="train_examples must be >= 0"):
        config_lib.resolve(config_lib.apply_overrides(base, {"train_examples": -1}))
    with pytest.raises(ConfigError, match="reads its examples from files"):
        config_lib.resolve(config_lib.apply_overrides(base, {
            "train_examples": 10, "task.name": "bytes_lm", "task.source": "synthetic"}))


@pytest.mark.slow
def test_a_pool_run_resumes_mid_epoch_to_the_same_result(tmp_path):
    config = tiny_config(train_examples=24)  # 20 steps of 16: 13 epochs; checkpoint 10 mid-epoch

    def crash(step):
        if step == 15:
            raise RuntimeError("simulated crash")
        return False

    full = train.train_and_evaluate(config, tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_and_evaluate(config, tmp_path / "resumed", step_callback=crash)
    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    assert full["status"] == resumed["status"] == "done"
    drop = {"wall_time_s", *train.TIMING}
    curves = [[{k: v for k, v in r.items() if k not in drop}
               for r in RunDir(tmp_path / d).read_metrics()] for d in ("full", "resumed")]
    assert curves[0] == curves[1]
    assert json.loads((tmp_path / "full" / "config.json").read_text())["train_examples"] == 24
    # 24 examples, seen 13 times: the model memorises them (train loss below a fresh stream's)
    assert full["final_metrics"]["train/loss"] < full["final_metrics"]["eval/loss"]
