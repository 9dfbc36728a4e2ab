"""SLURM (`--executor slurm`): one job array through submitit, one array task per run dir
(or per pack of up to K run dirs sharing a compiled program, with `--pack K`).
Needs `pip install 'attnjax[slurm]'`.

Options (flags, or the experiment file's `executor = {"name": "slurm", ...}` block; flags win):
`partition`, `time_min` (per task, default 60), `gpus_per_run` (whole GPUs, default 0),
`cpus_per_run` (default 2), `array_parallelism` (tasks at once, default 32), `mem_gb`,
`cluster` (`slurm`; for trying a sweep out, `local` runs every task at once as processes on
this machine — array_parallelism does not apply — and `debug` one after another in this
process), `wait` (default true: wait for the array and print each
run as it ends; false: submit and return). Submission files, pickles and each task's log go to
`<sweep>/slurm/`; the job ids and that folder are appended to `<sweep>/slurm/jobs.json`. Runs
already done (or failed, unless `retry_failed`) are not submitted. Tasks import attnjax from
this checkout (PYTHONPATH); the sweep dir must be on a filesystem the nodes share.

Each task runs `TrainRunDir(path)`: `worker.train_run_dir`, the unit of work of every executor,
as worker `slurm-<array job>_<task>` (attnjax/claim.py), an id a requeued task keeps, so it
takes its own claim back at once. It returns (status, reason); a training error is recorded as
`failed` in the run dir and the task ends normally (the run dir is the truth, not the job
state).

Signals. submitit's job process (`submitit.core._submit`) installs, before calling the task:
SIGTERM -> log and ignore ("bypass"), SIGCONT -> ignore, and SIGUSR2 (SUBMITIT_PREEMPT_SIGNAL)
-> `checkpoint_and_try_requeue`, which calls the callable's `checkpoint()`, pickles the
DelayedSubmission it returns over the task's submission, runs `scontrol requeue <job>_<task>`
(the local cluster instead exits 144, which its controller restarts) and exits at once with
`sys.exit` — from wherever the main thread is. The array is submitted with
`--signal=USR2@90` (USR2 90 s before the time limit) and `--requeue`. Left alone, that `sys.exit`
would land in the middle of a train step: no checkpoint, and the loop would record the
SystemExit as `failed`. So while a task trains:

- SIGUSR2 (time limit, or a preemption notice where SLURM sends the user signal) is taken by
  this module: it asks the loop to stop (`signals.request_stop`, as a first SIGTERM), the loop
  checkpoints at its next step boundary, records `preempted` and releases the claim; only then
  is submitit's handler called, which requeues the task with `checkpoint()` =
  `DelayedSubmission(self, path)`, the same run dir, so the requeued task resumes from that
  checkpoint. Timeouts count against submitit's limit (3 requeues); preemptions do not.
- SIGTERM (preemption; also `scancel`) is taken by attnjax's loop itself (attnjax/signals.py
  replaces submitit's "ignore" while it runs): checkpoint, `preempted`, claim released. The
  task then exits with status 143 without a result, and is not requeued by this module — a
  requeue on SIGTERM would undo `scancel`. SLURM requeues preempted jobs itself where the
  partition's PreemptMode is REQUEUE (the job is submitted `--requeue`); the requeued task
  resumes the run. Otherwise the run stays `preempted` and running the sweep again resubmits
  it.
- A signal that arrives before the loop has started (during imports) is held and the loop
  stops before its first step; one that arrives after the run finished changes nothing.
If no step boundary comes within `preempt_grace_s`, the loop's watchdog records `preempted`
(from the last checkpoint), releases the claim and ends the process (attnjax/signals.py);
that task is not requeued by this module.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from attnjax import provenance
from attnjax.executors import Executor, fixed_pack, require
from attnjax.registry import ConfigError, unknown_name_message

CLUSTERS = ("slurm", "local", "debug")
FINISHED = ("done", "failed")


def _preempt_signal() -> int:
    """The signal submitit uses for time limits and preemption (its SUBMITIT_PREEMPT_SIGNAL)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name, signal.SIGUSR2)


class TrainRunDir:
    """One array task: trains (or resumes) the run dir it is called with, or a pack (a list of
    run dirs sharing a compiled program: `--pack K`). Picklable; submitit calls
    `checkpoint(path)` on SIGUSR2 and requeues what it returns (see the module doc)."""

    def __init__(self, retry_failed: bool = False):
        self.retry_failed = retry_failed

    def __call__(self, path: str | list[str]) -> dict:
        """(status, reason) of the run dir, or {path: (status, reason)} for a pack."""
        from attnjax import signals, worker

        paths = [path] if isinstance(path, str) else list(path)
        usr = _preempt_signal()
        requeue = signal.getsignal(usr)  # submitit's checkpoint_and_try_requeue (in its jobs)
        seen: list[int] = []

        def stop(signum, frame):
            seen.append(signum)
            signals.request_stop(signum)

        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, usr)} if main else {}
        try:
            worker.train_run_dirs(paths, retry_failed=self.retry_failed)
        except Exception:  # recorded as failed in the run dirs by train_run_dirs
            traceback.print_exc()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            signals.clear_request()
        out = {p: worker.outcome(p) for p in paths}
        in_job = os.environ.get("SUBMITIT_EXECUTOR") in ("slurm", "local")
        # preempted: a signal stopped the loop (a SIGTERM during the loop reaches only the
        # loop's own handler, so `seen` may be empty)
        stopped = [p for p, r in out.items() if r["status"] == "preempted"
                   or (seen and r["status"] not in FINISHED)]
        if in_job and stopped:
            signum = seen[0] if seen else signal.SIGTERM
            print(f"{', '.join(stopped)}: preempted ({signal.Signals(signum).name})",
                  file=sys.stderr, flush=True)
            if usr in seen and callable(requeue):
                requeue(usr, None)  # submitit: checkpoint() -> requeue -> exit
            sys.exit(128 + signum)  # no result: SLURM may be requeueing this task
        return out[path] if isinstance(path, str) else out

    def checkpoint(self, path: str | list[str]):
        """What submitit requeues: the same callable on the same run dir, which resumes from
        its last checkpoint (the run dir holds all the state; nothing else is pickled)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, path)


def _whole(key: str, value, minimum: int) -> int:
    if value is None or float(value) != int(float(value)) or int(float(value)) < minimum:
        raise ConfigError(f"--{key.replace('_', '-')} must be a whole number >= {minimum} for "
                          f"the slurm executor, got {value}")
    return int(float(value))


class Slurm(Executor):
    engine = ("submitit", "slurm")

    @classmethod
    def options(cls):
        return {"partition": None, "time_min": 60, "gpus_per_run": 0, "cpus_per_run": 2,
                "array_parallelism": 32, "cluster": "slurm", "retry_failed": False,
                "mem_gb": None, "wait": True, "pack": None}

    def __init__(self, **options):
        super().__init__(**options)
        s = self.settings
        if s["cluster"] not in CLUSTERS:
            raise ConfigError(unknown_name_message("submitit cluster", s["cluster"],
                                                   list(CLUSTERS)))
        s["time_min"] = _whole("time_min", s["time_min"], 1)
        s["gpus_per_run"] = _whole("gpus_per_run", s["gpus_per_run"], 0)
        s["cpus_per_run"] = _whole("cpus_per_run", s["cpus_per_run"], 1)
        s["array_parallelism"] = _whole("array_parallelism", s["array_parallelism"], 1)
        if s["mem_gb"] is not None and float(s["mem_gb"]) <= 0:
            raise ConfigError(f"mem_gb must be positive, got {s['mem_gb']}")
        s["pack"] = fixed_pack("slurm", s["pack"])

    def check_installed(self) -> None:
        super().check_installed()
        missing = [c for c in ("sbatch", "srun") if not shutil.which(c)]
        if self.settings["cluster"] == "slurm" and missing:
            raise ConfigError(f"--executor slurm needs SLURM (no {missing[0]} on this "
                              "machine's PATH); --cluster local runs the tasks as processes here")

    def devices_per_run(self):
        return self.settings["gpus_per_run"] or None

    def submitit_executor(self, folder: Path):
        """A submitit AutoExecutor with this executor's settings."""
        from attnjax import REPO_ROOT

        submitit = require("submitit", "slurm")
        s = self.settings
        ex = submitit.AutoExecutor(folder=folder, cluster=s["cluster"])
        path = f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"
        params = {
            "name": f"attnjax-{folder.parent.name}", "timeout_min": s["time_min"],
            "gpus_per_node": s["gpus_per_run"], "cpus_per_task": s["cpus_per_run"],
            "mem_gb": None if s["mem_gb"] is None else float(s["mem_gb"]),
            "slurm_partition": s["partition"], "slurm_array_parallelism": s["array_parallelism"],
            "slurm_additional_parameters": {"requeue": True}, "slurm_setup": [path],
        }
        if s["cluster"] == "local":
            params["local_setup"] = [path]
        ex.update_parameters(**params)
        return ex

    def execute(self, sweep_dir, run_dirs, *, log, train_fn=None):
        from attnjax import worker

        if train_fn is not None:
            raise ConfigError("train_fn needs the in-process executor")
        retry = self.settings["retry_failed"]
        todo = [r for r in run_dirs if worker.claimable(r, retry)]
        if len(todo) < len(run_dirs):
            log(f"slurm: {len(run_dirs) - len(todo)} runs not submitted (done, failed without "
                "--retry-failed, or held by a live worker)")
        if not todo:
            return None
        folder = Path(sweep_dir).resolve() / "slurm"
        ex = self.submitit_executor(folder)
        groups = worker.group_packs(todo, self.settings["pack"])
        args = [str(g[0].path.resolve()) if len(g) == 1 else [str(r.path.resolve()) for r in g]
                for g in groups]
        jobs = ex.map_array(TrainRunDir(retry), args)
        jobs_per_run = [job for g, job in zip(groups, jobs, strict=True) for _ in g]
        todo = [r for g in groups for r in g]
        self._record(folder, todo, jobs_per_run)
        ids = sorted({j.job_id.split("_")[0] for j in jobs})
        log(f"slurm: submitted {len(jobs)} tasks ({self.settings['cluster']} cluster, job "
            f"{', '.join(ids)}); logs in {folder}")
        if self.settings["wait"]:
            self._wait(todo, jobs_per_run, log)
        else:
            log(f"slurm: not waiting; progress: ./launch.sh status {sweep_dir}")
        return None

    def _record(self, folder: Path, run_dirs, jobs) -> None:
        path = folder / "jobs.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {"submissions": []}
        record["submissions"].append({
            "submitted_at": provenance.now(), "cluster": self.settings["cluster"],
            "folder": str(folder), "settings": self.settings,
            "tasks": [{"run": r.name, "job_id": j.job_id, "stdout": str(j.paths.stdout),
                       "stderr": str(j.paths.stderr)} for r, j in zip(run_dirs, jobs,
                                                                      strict=True)]})
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        os.replace(tmp, path)

    def _wait(self, run_dirs, jobs, log) -> None:
        """Until every task has ended: each run as its status becomes final, or as its task
        ends without finishing it (preempted and not requeued, killed)."""
        poll_s = 10.0 if self.settings["cluster"] == "slurm" else 1.0
        reported: dict[str, str] = {}
        done = 0
        try:
            while len(reported) < len(run_dirs):
                for r, job in zip(run_dirs, jobs, strict=True):
                    if r.name in reported:
                        continue
                    status = r.status() or "pending"
                    if status not in FINISHED and not job.done():
                        continue
                    status = r.status() or "pending"  # the task may have finished meanwhile
                    reported[r.name] = status
                    done += status == "done"
                    reason = r.read_summary().get("reason") if status != "done" else None
                    log(f"[{done}/{len(run_dirs)} done] {r.name}: {status}"
                        + (f" ({reason})" if reason else "")
                        + (f"; log {job.paths.stderr}" if status != "done" else ""))
                if len(reported) < len(run_dirs):
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            log("slurm: stopped waiting; the tasks go on (scancel the job to stop them)")
            raise


EXECUTOR = Slurm
