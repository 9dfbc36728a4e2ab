"""Faults a run dir must survive with its status telling the truth (issue: a run dir is the
unit of work). Each case was seen when a new user tried attnjax."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from attnjax import sweep, train
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir, RunDirError
from tests.conftest import REPO, run_cli, tiny_config


def _strip(summary):
    return {k: v for k, v in summary["final_metrics"].items() if k not in train.TIMING}


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}


DIE_BEFORE_DONE = """
import os, sys
from attnjax import rundir, train
from tests.conftest import tiny_config
write = rundir.RunDir.write_summary
def dying(self, summary):  # kill -9 after the final checkpoint, before `done` is written
    if summary["status"] == "done":
        os._exit(137)
    write(self, summary)
rundir.RunDir.write_summary = dying
train.train_and_evaluate(tiny_config(), sys.argv[1])
"""


def test_kill_after_the_final_checkpoint_resumes_without_duplicates(tmp_path):
    full = train.train_and_evaluate(tiny_config(), tmp_path / "full")
    proc = subprocess.run([sys.executable, "-c", DIE_BEFORE_DONE, str(tmp_path / "cut")],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-2000:]
    run = RunDir(tmp_path / "cut")
    assert run.status() == "running" and run.is_stale()
    again = train.train_and_evaluate(tiny_config(), run)
    assert again["status"] == "done" and _strip(again) == _strip(full)
    assert set(again["final_metrics"]) == set(full["final_metrics"])  # train/* keys kept
    records = run.read_metrics()
    assert [r["step"] for r in records if "eval/loss" in r] == [10, 20]
    assert [r["step"] for r in records if "test/loss" in r] == [20]


def test_sigterm_during_start_up_records_preempted(tmp_path, monkeypatch):
    real = train.init_state

    def start_slowly(*args):  # the scheduler's SIGTERM arrives while the model initialises
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(train, "init_state", start_slowly)
    summary = train.train_and_evaluate(tiny_config(), tmp_path)
    assert summary["status"] == "preempted" and "before the first step" in summary["reason"]
    assert RunDir(tmp_path).status() == "preempted" and RunDir(tmp_path).holder().released
    monkeypatch.setattr(train, "init_state", real)
    assert train.train_and_evaluate(tiny_config(), tmp_path)["status"] == "done"


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    config = tiny_config(checkpoint_every_steps=5, keep_checkpoints=2)
    full = train.train_and_evaluate(config, tmp_path / "full")
    run = RunDir(tmp_path / "cut")
    train.train_and_evaluate(config, run, step_callback=lambda s: s == 15)
    assert sorted(int(p.name) for p in run.checkpoints.iterdir() if p.name.isdigit()) == [10, 15]
    damaged = [p for p in (run.checkpoints / "15").rglob("*") if p.is_file()]
    for p in damaged:  # a truncated save: every array file cut short, metadata gone
        if "METADATA" in p.name:
            p.unlink()
        else:
            p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)])
    with pytest.warns(RuntimeWarning, match="checkpoint .*15 is damaged"):
        again = train.train_and_evaluate(config, run)
    assert again["status"] == "done" and _strip(again) == _strip(full)


def test_lost_checkpoints_are_refused_not_silently_retrained(tmp_path):
    run = RunDir(tmp_path)
    train.train_and_evaluate(tiny_config(), run, step_callback=lambda s: s == 12)
    before = run.file("metrics.jsonl").read_text()
    import shutil

    shutil.rmtree(run.checkpoints)
    with pytest.raises(RunDirError, match="checkpoint was saved at step 12"):
        train.train_and_evaluate(tiny_config(), run)
    summary = run.read_summary()
    assert summary["status"] == "failed" and "refusing to retrain" in summary["reason"]
    assert run.file("metrics.jsonl").read_text() == before  # its history is untouched


HUNG_STEP = """
import os, signal, sys, time
from attnjax import train
from tests.conftest import tiny_config
def hang(step):
    if step == 5:
        for _ in range(int(sys.argv[2])):
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(3600)  # a step that never returns
    return False
train.train_and_evaluate(tiny_config(preempt_grace_s=1.0), sys.argv[1], step_callback=hang)
"""


@pytest.mark.parametrize("signals, reason", [(1, "grace period"), (2, "received twice")])
def test_sigterm_ends_a_run_whose_step_never_returns(tmp_path, signals, reason):
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", HUNG_STEP, str(tmp_path), str(signals)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert time.time() - start < 100
    run = RunDir(tmp_path)
    summary = run.read_summary()
    assert summary["status"] == "preempted" and reason in summary["reason"], summary
    assert run.holder().released
    assert train.train_and_evaluate(tiny_config(), run)["status"] == "done"


def test_disk_full_while_closing_is_recorded_as_failed(tmp_path, monkeypatch):
    from attnjax import trackers

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trackers.Trackers, "close", full)
    summary = train.train_and_evaluate(tiny_config(num_train_steps=4), tmp_path)
    assert summary["status"] == "failed"
    assert summary["reason"].startswith("disk full while closing the trackers at step 4")
    assert RunDir(tmp_path).status() == "failed"


# ---------------------------------------------------------------- bad input: one line, exit 2


def _study(tmp_path, sweep_body):
    path = tmp_path / "study.py"
    path.write_text("from tests.conftest import tiny_config\n"
                    "def get_config():\n    return tiny_config()\n" + textwrap.dedent(sweep_body))
    return path


@pytest.mark.parametrize("body, message", [
    ("def sweep():\n    return {'seed': 1}\n", "must return a list of override dicts"),
    ("def sweep():\n    return [1, 2]\n", "item 0 is int"),
    ("def sweep():\n    raise RuntimeError('no grid')\n", "RuntimeError: no grid (line 5)"),
    ("def sweep(:\n", "SyntaxError"),
])
def test_bad_experiment_files_are_one_line_errors(tmp_path, body, message):
    proc = run_cli("sweep", str(_study(tmp_path, body)), "--workdir", str(tmp_path / "out"))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_config_file_and_workdirs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config(:\n")
    proc = run_cli("run", str(bad))
    assert proc.returncode == 2 and "SyntaxError" in proc.stderr and "line 1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    study = _study(tmp_path, "def sweep():\n    return [{'seed': 0}]\n")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for workdir, message in ((afile, "is not a directory"), (afile / "sub", "not a writable")):
        proc = run_cli("sweep", str(study), "--workdir", str(workdir))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_a_batch_the_devices_cannot_split_is_refused_at_plan_time(tmp_path):
    study = _study(tmp_path, "def sweep():\n    return [{'batch_size': 12, 'num_devices': 0}]\n")
    with pytest.raises(ConfigError, match="batch_size=12 must be divisible by the 8 devices"):
        sweep.expand(sweep.load_experiment(study), devices_per_run=8)
    with pytest.raises(ConfigError):
        sweep.plan(study, tmp_path / "out", devices_per_run=8)
    assert not (tmp_path / "out").exists()


def test_compare_reads_a_planned_sweep_without_crashing(tmp_path):
    study = _study(tmp_path, "def sweep():\n    return [{'seed': 0}, {'seed': 1}]\n")
    sweep.plan(study, tmp_path / "s")
    proc = run_cli("compare", str(tmp_path / "s"), "--out", str(tmp_path / "report"))
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "### pending (2)" in (tmp_path / "report" / "report.md").read_text()
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert [e["status"] for e in manifest["runs"]] == ["pending", "pending"]
