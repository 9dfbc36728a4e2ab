"""Workers and executors: every run trained exactly once, whatever runs it, with the same
numbers; a worker killed mid-run is taken over and the run ends as if never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from attnjax import sweep, train, worker
from attnjax.rundir import RunDir
from tests.conftest import REPO, run_cli

STUDY = """
from tests.conftest import tiny_config

def get_config():
    return tiny_config(num_train_steps={steps}, eval_every_steps=10, checkpoint_every_steps=10,
                       log_every_steps=5)

def sweep():
    return [{{"model.attention": a, "seed": s}} for a in {variants} for s in {seeds}]
"""


def _study(tmp_path, steps=20, variants=("softmax",), seeds=(0, 1)):
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent(STUDY.format(steps=steps, variants=variants, seeds=seeds)))
    return path


def _finals(sweep_dir):
    out = {}
    for r in sweep.sweep_runs(sweep_dir):
        s = r.read_summary()
        assert s["status"] == "done", (r.name, s)
        out[r.name] = {k: v for k, v in s["final_metrics"].items() if k not in train.TIMING}
    return out


def _claims(run_dir):
    return sorted(p.name for p in (run_dir.path / "claims").glob("claim-*.json"))


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


def test_plan_then_two_workers_train_every_run_once_with_in_process_numbers(tmp_path):
    study = _study(tmp_path, seeds=(0, 1, 2, 3))  # one compile per worker
    reference = tmp_path / "inprocess"
    sweep.run_sweep(study, reference, log=lambda s: None)

    planned = tmp_path / "planned"
    proc = run_cli("sweep", str(study), "--plan", "--workdir", str(planned), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "launch.sh work" in proc.stdout
    runs = sweep.sweep_runs(planned)
    assert [r.status() for r in runs] == ["pending"] * 4
    assert json.loads((planned / "manifest.json").read_text())["runs"][0]["status"] == "pending"

    workers = [subprocess.Popen([sys.executable, "-m", "attnjax", "work", str(planned),
                                 "--worker-id", f"w{k}"], cwd=REPO, env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for k in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert _finals(planned) == _finals(reference)
    for r in runs:  # exactly one claim each: nobody trained a run twice
        assert len(_claims(r)) == 1, (r.name, _claims(r))
        steps = [m["step"] for m in r.read_metrics() if "train/loss" in m]
        assert steps == sorted(set(steps))  # one history, no repeated steps
    holders = {r.holder().worker for r in runs}
    assert holders <= {"w0", "w1"}
    manifest = json.loads((planned / "manifest.json").read_text())
    assert [e["status"] for e in manifest["runs"]] == ["done"] * 4


def test_workers_2_equals_workers_1_run_for_run(tmp_path):
    study = _study(tmp_path)
    proc = run_cli("sweep", str(study), "--workers", "2", "--workdir", str(tmp_path / "two"),
                   cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[2/2 done]" in proc.stderr and "softmax" in proc.stdout  # progress, then the table
    assert len(list((tmp_path / "two" / "workers").glob("worker-*.log"))) == 2
    sweep.run_sweep(study, tmp_path / "one", log=lambda s: None)
    assert _finals(tmp_path / "two") == _finals(tmp_path / "one")


KILL_MID_RUN = """
import os, signal, sys
from attnjax import train, worker
def killed(config, path):
    # SIGKILL at step 25, after the checkpoint at step 20: nothing can clean up
    cb = lambda step: step == 25 and os.kill(os.getpid(), signal.SIGKILL)
    return train.train_and_evaluate(config, path, step_callback=cb, worker="victim")
worker.work(sys.argv[1], train_fn=killed, worker="victim")
"""


def test_kill_9_mid_run_is_taken_over_and_ends_identical(tmp_path):
    study = _study(tmp_path, steps=40)
    sweep.run_sweep(study, tmp_path / "full", log=lambda s: None)
    sweep.plan(study, tmp_path / "killed")
    proc = subprocess.run([sys.executable, "-c", KILL_MID_RUN, str(tmp_path / "killed")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    first = sweep.sweep_runs(tmp_path / "killed")[0]
    assert first.status() == "running" and first.is_stale()  # the truth: its worker is gone
    assert first.holder().worker == "victim"

    worker.work(tmp_path / "killed", worker="rescuer", log=lambda s: None)
    assert _finals(tmp_path / "killed") == _finals(tmp_path / "full")
    assert first.read_summary()["worker"] == "rescuer"
    holders = [json.loads((first.path / "claims" / c).read_text()) for c in _claims(first)]
    assert holders[-1]["worker"] == "rescuer" and holders[-1]["took_over"] == "victim"
    assert {h["worker"] for h in holders} == {"victim", "rescuer"}
    params = {}
    for d in ("full", "killed"):
        run = sweep.sweep_runs(tmp_path / d)[0]
        config = train.config_lib.resolve(tiny_config_from(run))
        params[d] = _params(run, config)
    import jax

    jax.tree.map(np.testing.assert_array_equal, params["full"], params["killed"])


def tiny_config_from(run):
    import ml_collections

    return ml_collections.ConfigDict(run.read_config())


def _params(run, config):
    import jax

    from attnjax import steps

    _, _, model, _, tx, _ = steps.setup(config)
    batch = steps.tasks.create(config.task.name, **{
        k: v for k, v in config.task.items() if k != "name"}).batch("train", 0, 2, 0)
    template = jax.eval_shape(lambda: steps.init_state(config, model, tx, batch))
    ckpt = run.checkpointer()
    step, state, _ = ckpt.restore_latest(template)
    ckpt.close()
    assert step == config.num_train_steps
    return state.params


def test_sigterm_to_a_worker_preempts_releases_and_the_next_worker_resumes(tmp_path):
    study = _study(tmp_path)
    sweep.plan(study, tmp_path / "s")

    def preempted(config, path):  # a scheduler's SIGTERM during step 7 of the first run
        cb = lambda step: step == 7 and os.kill(os.getpid(), signal.SIGTERM)
        return train.train_and_evaluate(config, path, step_callback=cb)

    results = worker.work(tmp_path / "s", train_fn=preempted, log=lambda s: None)
    assert [s["status"] for _, s in results] == ["preempted"]  # the worker stops
    first = results[0][0]
    assert first.holder().released and first.read_summary()["step"] == 8
    assert [r.status() for r in sweep.sweep_runs(tmp_path / "s")][1:] == ["pending"]
    again = worker.work(tmp_path / "s", log=lambda s: None)
    assert len(again) == 2 and all(s["status"] == "done" for _, s in again)


def test_a_failed_run_never_blocks_the_others(tmp_path):
    path = tmp_path / "study.py"
    path.write_text(textwrap.dedent("""
        from tests.conftest import tiny_config
        def get_config():
            return tiny_config(num_train_steps=6, grad_clip_norm=0.0)
        def sweep():
            return [{"learning_rate": lr} for lr in (float("inf"), 1e-3)]
    """))
    results = sweep.run_sweep(path, tmp_path / "s", log=lambda s: None)
    assert [s["status"] for _, s in results] == ["failed", "done"]
    assert "non-finite loss" in results[0][1]["reason"]
    assert worker.work(tmp_path / "s", log=lambda s: None) == []  # failed runs stay failed
    retried = worker.work(tmp_path / "s", retry_failed=True, log=lambda s: None)
    assert [s["status"] for _, s in retried] == ["failed"]


@pytest.mark.parametrize("workers, gpus, expected", [
    (2, [], [{}, {}]),
    (2, ["0", "1", "2", "3"], [{"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]),
    (2, ["0"], [{"CUDA_VISIBLE_DEVICES": "0", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.450"}] * 2),
])
def test_local_workers_get_their_own_slice_of_gpus(workers, gpus, expected):
    from attnjax.executors import local

    assert local.assign(workers, gpus) == expected


def test_local_workers_that_do_not_split_the_gpus_are_refused():
    from attnjax.executors import local
    from attnjax.registry import ConfigError

    with pytest.raises(ConfigError, match="does not split 4 GPUs evenly; use one of 1, 2, 4"):
        local.assign(3, ["0", "1", "2", "3"])


def test_rundir_refuses_impossible_status_transitions(tmp_path):
    from attnjax.rundir import RunDirError

    run = RunDir(tmp_path)
    run.write_summary({"status": "pending"})
    with pytest.raises(RunDirError, match="'pending' cannot become 'done'"):
        run.write_summary({"status": "done"})
    run.write_summary({"status": "running"})
    run.write_summary({"status": "done"})
    with pytest.raises(RunDirError, match="'done' cannot become 'running'"):
        run.write_summary({"status": "running"})
