"""The claim protocol: exclusive, stale takeover, live refusal, and real processes racing."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from attnjax import claim as claim_lib
from attnjax.rundir import RunDir
from tests.conftest import run_cli, tiny_config


def _as_other_process(claim):
    """Rewrites `claim` as held by another live process (this one's parent)."""
    from attnjax import provenance

    info = json.loads(claim.path.read_text())
    info.update(pid=os.getppid(), pid_start=provenance.process_start(os.getppid()))
    claim.path.write_text(json.dumps(info))


def test_a_claim_is_exclusive_until_released(tmp_path):
    run = RunDir(tmp_path / "r")
    first = run.claim(60, worker="a")
    _as_other_process(first)
    with pytest.raises(claim_lib.ClaimHeld, match="worker a"):
        run.claim(60, worker="b")
    first.release()
    second = run.claim(60, worker="b")
    assert run.holder().worker == "b" and second.index == first.index + 1
    second.release()


def test_stale_claims_are_taken_over(tmp_path):
    run = RunDir(tmp_path / "r")
    old = run.claim(5, worker="a")
    past = time.time() - 60
    os.utime(old.path, (past, past))  # no heartbeat for a minute: the machine died
    new = run.claim(5, worker="b")
    assert run.holder().worker == "b"
    assert not old.heartbeat() and old.lost.is_set()  # the stalled worker learns it lost
    old.release()  # does not release the new holder's claim
    assert run.holder().worker == "b" and not run.holder().released
    new.release()


def test_a_dead_process_on_this_host_frees_its_claim_at_once(tmp_path):
    run = RunDir(tmp_path / "r")
    proc = multiprocessing.get_context("spawn").Process(target=_claim_and_die,
                                                        args=(str(run.path),))
    proc.start()
    proc.join(60)
    holder = run.holder()
    assert holder is not None and not holder.released and holder.age() < 60
    assert not holder.alive(timeout_s=3600)  # its pid is gone, whatever the timeout
    run.claim(3600, worker="b").release()


def _claim_and_die(path):
    RunDir(path).claim(3600, worker="doomed")
    os._exit(0)


def _race(path, worker, start, results):
    while time.time() < start:
        pass
    try:
        c = RunDir(path).claim(3600, worker=worker)
        results.put(worker)
        time.sleep(1.0)  # hold it while the others try
        c.release()
    except claim_lib.ClaimHeld:
        results.put(None)


def test_processes_racing_for_one_run_dir_get_it_exactly_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = time.time() + 3.0  # after every process has started
    procs = [ctx.Process(target=_race, args=(str(tmp_path / "r"), f"w{i}", start, results))
             for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    winners = [w for w in (results.get(timeout=10) for _ in procs) if w is not None]
    assert len(winners) == 1, winners
    assert RunDir(tmp_path / "r").holder().worker == winners[0]


def test_run_into_a_live_claimed_dir_exits_2_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    run = RunDir(workdir)
    c = run.claim(3600, worker="someone-else")  # held by this test's process
    try:
        proc = run_cli("run", "configs/mqar.py", "--workdir", str(workdir),
                       "--config.num_train_steps=2", "--config.progress_bar=False")
    finally:
        c.release()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "someone-else" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_status_shows_each_run_and_stale_ones(tmp_path):
    from attnjax import status, train

    train.train_and_evaluate(tiny_config(num_train_steps=3), tmp_path / "a")
    stale = RunDir(tmp_path / "b")
    stale.write_config(json.dumps({"claim_timeout_s": 5}))
    stale.write_summary({"status": "running", "step": 7, "num_train_steps": 20})
    c = stale.claim(5, worker="gone")
    os.utime(c.path, (time.time() - 600,) * 2)
    rows = {r["name"]: r for r in status.rows(tmp_path)}
    assert rows["a"]["status"] == "done" and rows["a"]["step"] == 3
    assert rows["b"]["stale"] and rows["b"]["worker"] is None
    text = status.table(list(rows.values()))
    assert "running (stale)" in text and "7/20" in text
    assert "2 runs: 1 running, 1 done, 1 stale" in text
    proc = run_cli("status", str(tmp_path), "--format", "json")
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 2
