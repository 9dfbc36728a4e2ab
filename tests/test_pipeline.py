"""The input pipeline: prefetching changes nothing, hosts split batches, errors surface, and
length generalisation and the data position reach the run dir."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from attnjax import tasks, train
from attnjax.input_pipeline import DataSource, Prefetcher
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir
from tests.conftest import tiny_config


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetched_stream_equals_direct_batches(depth):
    source = DataSource(tasks.create("mqar"), "train", 8, seed=3)
    with Prefetcher(source, 5, 12, depth=depth) as stream:
        got = list(stream)
    assert [i for i, _ in got] == list(range(5, 12))
    for index, batch in got:
        assert _same(batch, source.task.batch("train", index, 8, 3))


def test_worker_processes_give_the_same_stream():
    source = DataSource(tasks.create("listops", seq_len=64, min_len=16), "train", 4, seed=1)
    with Prefetcher(source, 3, 9, workers=2) as stream:
        got = list(stream)
    assert [i for i, _ in got] == list(range(3, 9))
    for index, batch in got:
        assert _same(batch, source.host_batch(index))


def test_host_shards_are_the_rows_of_the_global_batch():
    task = tasks.create("mqar")
    hosts = [DataSource(task, "train", 8, seed=0, host=h, num_hosts=4) for h in range(4)]
    parts = [h.host_batch(2) for h in hosts]
    assert all(p["inputs"].shape == (2, task.max_length) for p in parts)
    # every host draws different rows, and each host's rows are reproducible
    assert len({p["inputs"].tobytes() for p in parts}) == 4
    assert _same(parts[1], hosts[1].host_batch(2))
    with pytest.raises(ValueError, match="shard"):
        DataSource(task, "train", 6, seed=0, host=0, num_hosts=4).host_batch(0)
    # one host: exactly the task's batch, as before the pipeline existed
    assert _same(DataSource(task, "train", 8, 0, 0, 1).host_batch(2), task.batch("train", 2, 8, 0))


def test_an_error_in_the_data_thread_is_raised_in_the_train_loop():
    class Broken:
        split, batch_size = "train", 4

        def host_batch(self, index):
            if index == 2:
                raise ValueError("bad file at example 9")
            return {"inputs": np.zeros((4, 3))}

    with Prefetcher(Broken(), 0, 5) as stream, pytest.raises(ValueError, match="example 9"):
        list(stream)


def test_closing_early_stops_the_thread():
    source = DataSource(tasks.create("mqar"), "train", 4, seed=0)
    stream = Prefetcher(source, 0, 10**9, depth=2)
    next(iter(stream))
    stream.close()
    time.sleep(0.2)
    assert not any(t.name == "attnjax-train-data" and t.is_alive() for t in threading.enumerate())


def test_data_position_is_checkpointed(tmp_path):
    config = tiny_config(num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=6)
    assert train.train_and_evaluate(config, tmp_path)["status"] == "done"
    ckpt = RunDir(tmp_path).checkpointer()
    data = ckpt._manager.restore(ckpt.latest_step())["data"]  # the JSON item alone
    ckpt.close()
    assert data == {"split": "train", "next_index": 6, "batch_size": 16, "seed": 0,
                    "num_hosts": 1}


def test_length_generalisation_is_logged_per_length(tmp_path):
    config = tiny_config(num_train_steps=4, eval_every_steps=2, eval_lengths=(32, 16, 64),
                         num_test_batches=1, **{"model.positional": "sinusoidal"})
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["status"] == "done", summary
    final = summary["final_metrics"]
    for prefix in ("eval", "eval_len32", "eval_len64", "test", "test_len32", "test_len64"):
        assert 0.0 <= final[f"{prefix}/accuracy"] <= 1.0, prefix
    # 16 is the training length: its series point is the eval/ number itself
    assert final["eval_len16/accuracy"] == final["eval/accuracy"]
    assert final["test_len16/accuracy"] == final["test/accuracy"]
    evals = [r["step"] for r in RunDir(tmp_path).read_metrics() if "eval_len64/accuracy" in r]
    assert evals == [2, 4]


def test_eval_lengths_are_validated_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="seq_len=4 is not valid"):
        train.train_and_evaluate(tiny_config(eval_lengths=(4,)), tmp_path / "a")
    with pytest.raises(ConfigError, match="integers"):
        train.train_and_evaluate(tiny_config(eval_lengths=("long",)), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_data_benchmark_writes_rates(tmp_path):
    import json

    from attnjax.bench import data

    assert data.main(["--tasks", "mqar", "--sizes", "quickstart", "--batches", "2", "--steps",
                      "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "data_benchmark.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["mqar"]
    assert rows[0]["host_batches_per_s"] > 0 and rows[0]["train_steps_per_s"] > 0
    assert rows[0]["cached_batches_per_s"] > 0 and rows[0]["cached_headroom"] > 0
    with pytest.raises(ConfigError, match="Known"):
        data.main(["--tasks", "mqra", "--out", str(tmp_path)])
