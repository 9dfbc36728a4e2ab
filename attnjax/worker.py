"""A worker: claims unfinished run dirs of a sweep dir one at a time and trains them.

    attnjax work SWEEP_DIR      # on any number of processes or machines sharing the filesystem

`train_run_dir(path)` is the whole unit of work ("train this run dir"): it needs nothing but
the run dir (config.json), claims it, trains or resumes it, and releases it. Every executor
(in-process, local processes, Ray, SLURM) ends up calling it, so results do not depend on the
executor. `work(sweep_dir)` loops: pending, preempted and stale (running, but its worker is
dead) runs are claimable; failed ones only with `retry_failed`. It stops when nothing is left,
or when its own run was preempted (this worker was told to stop).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attnjax import claim as claim_lib
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir


def claimable(run_dir: RunDir, retry_failed: bool = False) -> bool:
    """Whether a worker may take this run now (a cheap pre-check; the claim decides)."""
    status = run_dir.status() or "pending"
    if status == "done" or (status == "failed" and not retry_failed):
        return False
    holder = run_dir.holder()
    return holder is None or not holder.alive(run_dir.claim_timeout())


def train_run_dir(path: str | Path | RunDir, *, worker: str | None = None,
                  train_fn: Callable[..., dict[str, Any]] | None = None,
                  retry_failed: bool = False) -> dict[str, Any] | None:
    """Claims, trains (or resumes) and releases one run dir; returns its summary, or None when
    it had nothing to do (done, failed without retry). ClaimHeld when a live worker has it."""
    import ml_collections

    from attnjax import config as config_lib

    run_dir = path if isinstance(path, RunDir) else RunDir(path)
    raw = run_dir.read_config()
    if raw is None:
        raise ConfigError(f"{run_dir.path} holds no config.json; is it a run directory?")
    config = config_lib.resolve(ml_collections.ConfigDict(raw))
    claim = run_dir.claim(config.claim_timeout_s, worker)
    try:
        summary = run_dir.read_summary()  # after the claim: the truth, not a stale listing
        status = summary.get("status")
        if status == "done" or (status == "failed" and not retry_failed):
            return None
        try:
            if train_fn is not None:
                return train_fn(config, run_dir.path)
            from attnjax.train import train_and_evaluate

            return train_and_evaluate(config, run_dir, claim=claim)
        except BaseException as e:
            now = run_dir.read_summary()
            if now.get("status") in ("pending", "running", None):  # nothing recorded why
                run_dir.write_summary({**now, "status": "failed",
                                       "reason": f"{type(e).__name__}: {e}"[:500]})
            raise
    finally:
        claim.release()


def work(sweep_dir: str | Path, *, worker: str | None = None, retry_failed: bool = False,
         only: Iterable[str] | None = None,
         train_fn: Callable[..., dict[str, Any]] | None = None,
         log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
         ) -> list[tuple[RunDir, dict[str, Any]]]:
    """Trains claimable runs of `sweep_dir` (or of the names in `only`) until none is left.
    Returns (run dir, summary) of each run this worker trained."""
    from attnjax.sweep import sweep_runs, write_manifest

    worker = worker or claim_lib.default_worker_id()
    only = set(only) if only is not None else None
    results: list[tuple[RunDir, dict[str, Any]]] = []
    skipped: set[str] = set()
    while True:
        runs = [r for r in sweep_runs(sweep_dir) if only is None or r.name in only]
        todo = [r for r in runs if r.name not in skipped and claimable(r, retry_failed)]
        if not todo:
            return results
        run_dir = todo[0]
        position = f"[{runs.index(run_dir) + 1}/{len(runs)}]"
        resuming = run_dir.status() not in (None, "pending")
        log(f"{position} {run_dir.name}" + (" (resuming)" if resuming else ""))
        try:
            summary = train_run_dir(run_dir, worker=worker, train_fn=train_fn,
                                    retry_failed=retry_failed)
        except claim_lib.ClaimHeld:
            skipped.add(run_dir.name)  # another worker got there first
            continue
        except KeyboardInterrupt:
            write_manifest(sweep_dir)
            raise
        except Exception:  # recorded as failed in the run dir; the sweep goes on
            log(f"{position} {run_dir.name} failed:\n{traceback.format_exc()}")
            summary = run_dir.read_summary()
        skipped.add(run_dir.name)
        if summary is None:
            continue
        results.append((run_dir, summary))
        write_manifest(sweep_dir)
        status = summary.get("status")
        log(f"{position} {run_dir.name}: {status}"
            + (f" ({summary.get('reason')})" if summary.get("reason") else ""))
        if status == "preempted":  # this worker was told to stop (SIGTERM, Ctrl-C)
            log(f"{worker} stops: re-run `attnjax work {sweep_dir}` (or the sweep) to resume")
            return results
