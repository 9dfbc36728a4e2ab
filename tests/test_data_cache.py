"""The on-disk data cache: bit-identical batches, shared by runs, refused where pointless."""

from __future__ import annotations

import numpy as np
import pytest

from attnjax import data_cache, tasks, train
from attnjax.input_pipeline import DataSource
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir
from tests.conftest import tiny_config


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k  # bit for bit


def test_cached_pathfinder_batches_are_bit_identical_to_generated_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(data_cache, "CHUNK_BATCHES", 4)  # several chunks, a partial last one
    task = tasks.create("pathfinder", image_size=16, contour_length=4, num_distractors=2)
    source = DataSource(task, "train", 4, seed=3)
    cached = data_cache.cached(source, 0, 6, root_dir=tmp_path)
    assert isinstance(cached, data_cache.CachedSource)
    chunks = sorted(p.name for p in cached.cache.dir.glob("chunk-*"))
    assert chunks == ["chunk-000000000-4", "chunk-000000004-2"]
    for i in range(6):
        _same(cached.host_batch(i), source.host_batch(i))
    # a longer request extends the last chunk and supersedes the short one; past it: generated
    longer = data_cache.cached(source, 0, 9, root_dir=tmp_path)
    assert sorted(p.name for p in longer.cache.dir.glob("chunk-*")) == [
        "chunk-000000000-4", "chunk-000000004-4", "chunk-000000008-1"]
    for i in (5, 8, 11):
        _same(longer.host_batch(i), source.host_batch(i))
    assert not longer.cache.has(11)
    # another seed or split is another entry; the all-true padding mask is stored as one value
    other = data_cache.BatchCache(DataSource(task, "eval", 4, seed=3), tmp_path)
    assert other.dir != cached.cache.dir and not other.has(0)
    assert not list(cached.cache.dir.glob("*/padding_mask.npy"))
    assert np.load(next(cached.cache.dir.glob("*/inputs.npy"))).dtype == np.uint8


def test_a_run_with_the_data_cache_equals_one_without(tmp_path, monkeypatch):
    monkeypatch.setenv(data_cache.ENV, str(tmp_path / "cache"))
    drop = {"wall_time_s", *train.TIMING}
    curves = []
    for name, cache in (("plain", False), ("cached", True), ("cached-again", True)):
        summary = train.train_and_evaluate(tiny_config(data_cache=cache), tmp_path / name)
        assert summary["status"] == "done", summary
        curves.append([{k: v for k, v in r.items() if k not in drop}
                       for r in RunDir(tmp_path / name).read_metrics()])
    assert curves[0] == curves[1] == curves[2]
    entries = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir())
    assert entries == ["eval", "test", "train"]  # the second cached run wrote nothing new


def test_data_cache_is_refused_for_tasks_that_read_files():
    from attnjax import config as config_lib

    config = config_lib.apply_overrides(config_lib.defaults(), {
        "data_cache": True, "task.name": "bytes_lm", "task.source": "synthetic"})
    with pytest.raises(ConfigError, match="data_cache"):
        config_lib.resolve(config)
