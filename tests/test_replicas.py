"""Packs: K runs that differ only in traced values trained as one compiled program (a vmapped
replica axis) end as they would alone, stay isolated, resume exactly and compile once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from attnjax import steps, sweep, train, worker
from attnjax.rundir import RunDir
from tests.conftest import REPO, run_python, tiny_config

RUNS = [{"seed": 0}, {"seed": 1}, {"seed": 0, "learning_rate": 1e-2, "weight_decay": 0.0,
                                   "warmup_steps": 2}]


def _configs(**common):
    return [tiny_config(num_train_steps=60, eval_every_steps=30, checkpoint_every_steps=30,
                        log_every_steps=10, **common, **r) for r in RUNS]


def _strip(summary):
    return {k: v for k, v in summary["final_metrics"].items() if k not in train.TIMING}


def _params(run_dir, config):
    config = train.config_lib.resolve(config)
    task, _, model, _, tx, _ = steps.setup(config)
    batch = task.batch("train", 0, 2, 0)
    template = jax.eval_shape(lambda: steps.init_state(config, model, tx, batch))
    ckpt = RunDir(run_dir).checkpointer()
    _, state, _ = ckpt.restore_latest(template)
    ckpt.close()
    return state.params


def _worst(a, b):
    """Largest relative difference between two dicts of metrics."""
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b)


def test_a_pack_ends_as_its_runs_would_alone(tmp_path, capsys):
    configs = _configs()
    alone = [train.train_and_evaluate(c, tmp_path / f"alone{i}") for i, c in enumerate(configs)]
    packed = train.train_pack(configs, [tmp_path / f"pack{i}" for i in range(3)])
    worst = 0.0
    for i, (a, p) in enumerate(zip(alone, packed, strict=True)):
        assert p["status"] == "done" and set(_strip(p)) == set(_strip(a))
        worst = max(worst, _worst(_strip(p), _strip(a)))
        assert p["pack"] == [f"pack{j}" for j in range(3) if j != i]
        pa = jax.tree_util.tree_flatten_with_path(_params(tmp_path / f"alone{i}", configs[i]))
        pb = jax.tree.leaves(_params(tmp_path / f"pack{i}", configs[i]))
        for (path, x), y in zip(pa[0], pb, strict=True):
            if "key']['bias" in jax.tree_util.keystr(path):
                # softmax is invariant to the key bias: its gradient is rounding noise, which
                # Adam's normalisation turns into full-size steps in either run
                continue
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=str(path))
    assert worst <= 1e-4, worst
    with capsys.disabled():
        print(f"\nworst relative metric difference, pack of 3 vs alone: {worst:.2e}")
    # each packed run dir has exactly the single-run schema
    for name in ("config.json", "summary.json", "metrics.jsonl"):
        assert (tmp_path / "pack0" / name).is_file()
    lines = RunDir(tmp_path / "pack2").read_metrics()
    assert [r["step"] for r in lines if "eval/loss" in r] == [30, 60]
    lr = [r["train/learning_rate"] for r in lines if "train/learning_rate" in r]
    assert lr[0] > lr[-1] > 0  # its own schedule (peak 1e-2, 2 warmup steps)


def test_a_replica_that_diverges_fails_alone(tmp_path):
    base = _configs(grad_clip_norm=0.0)[:2]
    bad = tiny_config(num_train_steps=60, eval_every_steps=30, checkpoint_every_steps=30,
                      log_every_steps=10, grad_clip_norm=0.0, learning_rate=float("inf"),
                      seed=5)
    with_bad = train.train_pack([base[0], bad, base[1]],
                                [tmp_path / "a", tmp_path / "bad", tmp_path / "b"])
    without = train.train_pack(base, [tmp_path / "a2", tmp_path / "b2"])
    assert with_bad[1]["status"] == "failed" and "non-finite loss" in with_bad[1]["reason"]
    assert with_bad[1]["step"] == 2 and RunDir(tmp_path / "bad").status() == "failed"
    for got, want in ((with_bad[0], without[0]), (with_bad[2], without[1])):
        assert got["status"] == "done"
        assert _strip(got) == _strip(want)  # bit-identical to the pack without it (XLA:CPU)
    assert RunDir(tmp_path / "bad").checkpointer().latest_step() is None  # never a NaN state


PACKED_STUDY = """
from tests.conftest import tiny_config

def get_config():
    return tiny_config(num_train_steps=40, eval_every_steps=20, checkpoint_every_steps=10,
                       log_every_steps=5)

def sweep():
    return [{"seed": s, "learning_rate": lr} for s in (0, 1) for lr in (3e-3, 1e-2)]
"""

KILL_PACK = """
import os, signal, sys
from attnjax import train, worker
cadence = train._Loop.cadence
def dying(self, step, stopping):
    cadence(self, step, stopping)
    if step == 25:  # after the checkpoint at 20: kill -9, nothing can clean up
        os.kill(os.getpid(), signal.SIGKILL)
train._Loop.cadence = dying
worker.work(sys.argv[1], pack=4, worker="victim")
"""


def test_kill_9_of_a_packed_sweep_resumes_identical(tmp_path):
    study = tmp_path / "study.py"
    study.write_text(textwrap.dedent(PACKED_STUDY))
    sweep.run_sweep(study, tmp_path / "full", options={"pack": 4}, log=lambda s: None)
    sweep.plan(study, tmp_path / "cut")
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILL_PACK, str(tmp_path / "cut")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    runs = sweep.sweep_runs(tmp_path / "cut")
    assert all(r.status() == "running" and r.is_stale() for r in runs)
    worker.work(tmp_path / "cut", pack=4, log=lambda s: None)
    full = {r.name: _strip(r.read_summary()) for r in sweep.sweep_runs(tmp_path / "full")}
    cut = {r.name: _strip(r.read_summary()) for r in runs}
    assert cut == full
    assert all(len(r.read_summary()["pack"]) == 3 for r in runs)


def test_runs_at_different_stages_are_regrouped(tmp_path):
    study = tmp_path / "study.py"
    study.write_text(textwrap.dedent(PACKED_STUDY))
    run_dirs = sweep.plan(study, tmp_path / "s")
    configs = [train.config_lib.resolve(
        train.ml_collections.ConfigDict(r.read_config())) for r in run_dirs]
    train.train_and_evaluate(configs[0], run_dirs[0])  # done
    train.train_and_evaluate(configs[1], run_dirs[1], step_callback=lambda s: s == 10)
    log = []
    trained = worker.work(tmp_path / "s", pack=4, log=log.append)
    assert [r.name for r, _ in trained] == [r.name for r in run_dirs[1:]]
    assert "pack" not in run_dirs[1].read_summary()  # the preempted one resumed alone
    assert len(run_dirs[2].read_summary()["pack"]) == 1  # the two new ones as a pack
    alone = train.train_and_evaluate(configs[3], tmp_path / "alone3")
    assert _worst(_strip(run_dirs[3].read_summary()), _strip(alone)) <= 1e-4


def test_one_compile_for_every_pack_of_a_shape(tmp_path):
    compiles = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        cfgs = [tiny_config(num_train_steps=3, num_eval_batches=1, seed=s, learning_rate=lr,
                            **{"model.d_model": 48})
                for s in (0, 1) for lr in (1e-3, 3e-3)]
        train.train_pack(cfgs[:2], [tmp_path / "a", tmp_path / "b"])
        first = len(compiles)
        train.train_pack(cfgs[2:], [tmp_path / "c", tmp_path / "d"])
        assert len(compiles) == first  # same pack shape: nothing compiled again
    finally:
        jax.monitoring.clear_event_listeners()


PMAP_PACK = """
import json, sys
import jax
from attnjax import train
from tests.conftest import tiny_config
out = {}
for n in (1, 8):
    cfgs = [tiny_config(num_train_steps=8, log_every_steps=1, num_devices=n, seed=s)
            for s in (0, 1)]
    res = train.train_pack(cfgs, [sys.argv[1] + f"/d{n}s{s}" for s in (0, 1)])
    out[n] = [r["final_metrics"]["eval/loss"] for r in res]
print(json.dumps(out))
"""


def test_a_pack_on_8_devices_matches_one_device(tmp_path):
    proc = run_python(f"import sys; sys.argv = ['x', {str(tmp_path)!r}]\n" + PMAP_PACK,
                      devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["1"], out["8"], rtol=1e-5)


def test_runs_that_differ_in_more_than_traced_values_cannot_be_packed(tmp_path):
    with pytest.raises(ValueError, match="only in traced values"):
        train.train_pack([tiny_config(), tiny_config(**{"model.d_model": 48})],
                         [tmp_path / "a", tmp_path / "b"])


def test_auto_pack_size_fits_the_memory(tmp_path, monkeypatch):
    import attnjax.worker as w
    from attnjax import hardware

    study = tmp_path / "study.py"
    study.write_text(textwrap.dedent(PACKED_STUDY))
    run_dirs = sweep.plan(study, tmp_path / "s")
    assert worker.default_pack() == 1  # CPU: packs are opt-in
    monkeypatch.setattr(hardware, "free_memory_bytes", lambda d: 0)
    assert w._measure_pack_size(run_dirs[0], cap=64) == 1  # nothing free: one at a time
    monkeypatch.setattr(hardware, "free_memory_bytes", lambda d: 10**15)
    assert w._measure_pack_size(run_dirs[0], cap=3) == 3  # plenty: up to the cap
    w._AUTO.clear()
    trained = worker.work(tmp_path / "s", pack="auto", log=lambda s: None)
    assert len(trained) == 4 and all(len(s["pack"]) == 3 for _, s in trained)
