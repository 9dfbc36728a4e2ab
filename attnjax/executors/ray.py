"""Ray (`--executor ray [--ray-address ADDR]`): one Ray task per run dir, on a running Ray
cluster (`--ray-address`, e.g. `auto` or `ray://head:10001`) or on a local instance this
process starts (and stops) when no address is given; if this process already called
`ray.init`, that instance is used. Needs `pip install 'attnjax[ray]'`.

Each task calls `worker.train_run_dirs(run dirs)` — the same unit of work as every other
executor: one run dir, or with `--pack K` up to K that share a compiled program — as worker
`ray-<task id>` (Ray keeps the id when it retries a task whose process died, so the retry
takes the dead claim over and resumes from the last checkpoint). Tasks ask
for `--gpus-per-run` GPUs (default 0: CPU) and `--cpus-per-run` CPUs (default 1); Ray sets
their CUDA_VISIBLE_DEVICES. With a fractional share (0.5: two runs per GPU) each task gets
XLA_PYTHON_CLIENT_MEM_FRACTION = 0.9 × share, since JAX would otherwise preallocate 75 % of the
GPU in the first one. Tasks import attnjax from this checkout (PYTHONPATH), so the cluster's
nodes must see it and the sweep dir at the same paths (a shared filesystem). JAX_PLATFORMS and
the rest of the environment are the cluster's. A run held by a live worker elsewhere is
reported and left to it. Ctrl-C cancels the tasks: Ray interrupts each inside its step, so the
run records `preempted`, releases its claim and resumes from its last checkpoint next time.
"""

from __future__ import annotations

import math
import os
import traceback
import warnings

from attnjax.executors import Executor, fixed_pack
from attnjax.registry import ConfigError


def _train_task(paths: list[str], retry_failed: bool) -> dict:
    """Runs inside a Ray worker: train (or resume) a pack of run dirs (one, or several that
    share a compiled program); {path: (status, reason)}."""
    import ray

    from attnjax import worker

    name = f"ray-{ray.get_runtime_context().get_task_id()}"
    try:
        worker.train_run_dirs(paths, worker=name, retry_failed=retry_failed)
    except Exception as e:  # recorded as failed in the run dirs by train_run_dirs
        traceback.print_exc()
        return {p: {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:500]}
                for p in paths}
    return {p: worker.outcome(p) for p in paths}


class Ray(Executor):
    engine = ("ray", "ray")

    @classmethod
    def options(cls):
        return {"ray_address": None, "gpus_per_run": 0, "cpus_per_run": 1, "retry_failed": False,
                "pack": None}

    def __init__(self, **options):
        super().__init__(**options)
        for key in ("gpus_per_run", "cpus_per_run"):
            value = float(self.settings[key])
            if value < 0 or (value > 1 and value != int(value)):
                raise ConfigError(f"--{key.replace('_', '-')} must be a fraction up to 1 or a "
                                  f"whole number, got {self.settings[key]}")
            self.settings[key] = value
        self.settings["pack"] = fixed_pack("ray", self.settings["pack"])

    def devices_per_run(self):
        gpus = self.settings["gpus_per_run"]
        return max(1, math.floor(gpus)) if gpus > 0 else None

    def task_env(self) -> dict[str, str]:
        """The environment variables each task gets on top of its worker's."""
        from attnjax import REPO_ROOT

        env = {"PYTHONPATH": f"{REPO_ROOT}{os.pathsep}${{PYTHONPATH}}"}  # Ray expands ${X}
        gpus = self.settings["gpus_per_run"]
        if 0 < gpus < 1:
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 * gpus:.3f}"
        return env

    def execute(self, sweep_dir, run_dirs, *, log, train_fn=None):
        import ray

        if train_fn is not None:
            raise ConfigError("train_fn needs the in-process executor")
        started = not ray.is_initialized()
        if started:
            address = self.settings["ray_address"]
            kwargs = {"include_dashboard": False, "log_to_driver": False}
            if not address:  # a local instance for this sweep; tasks return small dicts
                kwargs["object_store_memory"] = 100 * 1024**2
            with warnings.catch_warnings():  # fork+exec of Ray's processes is safe with JAX
                warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
                ray.init(address=address, **kwargs)
            log(f"ray: {'connected to ' + address if address else 'started a local instance'}"
                f" ({ray.cluster_resources().get('CPU', 0):g} CPUs, "
                f"{ray.cluster_resources().get('GPU', 0):g} GPUs)")
        try:
            remote = ray.remote(_train_task).options(
                num_cpus=self.settings["cpus_per_run"], num_gpus=self.settings["gpus_per_run"],
                runtime_env={"env_vars": self.task_env()}, name="attnjax-train")
            from attnjax import worker

            refs = {remote.remote([str(r.path.resolve()) for r in group],
                                  self.settings["retry_failed"]): group
                    for group in worker.group_packs(run_dirs, self.settings["pack"])}
            log(f"ray: submitted {len(refs)} tasks for {len(run_dirs)} runs "
                f"({self.settings['gpus_per_run']:g} GPUs, "
                f"{self.settings['cpus_per_run']:g} CPUs each)")
            self._wait(ray, refs, log)
        finally:
            if started:
                ray.shutdown()

    def _wait(self, ray, refs, log) -> None:
        pending, done = list(refs), 0
        total = sum(len(group) for group in refs.values())
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    group = refs[ref]
                    try:
                        results = ray.get(ref)
                    except Exception as e:  # the task's process died (Ray retried it already)
                        why = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                        results = {str(r.path.resolve()): {"status": "failed", "reason": why}
                                   for r in group}
                    for run_dir in group:
                        result = results[str(run_dir.path.resolve())]
                        status = result["status"]
                        done += status == "done"
                        reason = result.get("reason") if status != "done" else None
                        log(f"[{done}/{total} done] {run_dir.name}: {status}"
                            + (f" ({reason})" if reason else ""))
        except KeyboardInterrupt:
            log(f"ray: cancelling {len(pending)} tasks (their runs resume from their last "
                "checkpoint when the sweep is run again)")
            for ref in pending:
                ray.cancel(ref)
            ray.wait(pending, num_returns=len(pending), timeout=60)
            raise


EXECUTOR = Ray
