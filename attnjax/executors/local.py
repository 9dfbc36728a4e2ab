"""Local worker processes (`--workers N`): N `attnjax work SWEEP_DIR` processes on this machine.

Devices: with G GPUs (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`), N dividing G gives each
worker its own G/N GPUs; N a multiple of G puts N/G workers on each GPU, each allowed
0.9·G/N of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION; JAX would otherwise preallocate 75 % in
the first one); other N are refused. On CPU the workers share the cores. Each worker's output
goes to <sweep>/workers/worker-<k>.log; this process prints each run as it ends. SIGTERM or
Ctrl-C is passed on to the workers, which checkpoint and stop; it then waits for them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from attnjax.executors import Executor
from attnjax.registry import ConfigError


def visible_gpus() -> list[str]:
    """GPU ids this process may use, without starting JAX (which would take their memory)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU")]
    return []


def assign(workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """The environment of each worker: its GPU slice (and memory share), or {} on CPU."""
    if not gpus:
        return [{} for _ in range(workers)]
    g = len(gpus)
    if g % workers == 0:
        per = g // workers
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[k * per:(k + 1) * per])}
                for k in range(workers)]
    if workers % g == 0:
        share = workers // g
        return [{"CUDA_VISIBLE_DEVICES": gpus[k // share],
                 "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / share:.3f}"} for k in range(workers)]
    valid = sorted({d for d in range(1, g + 1) if g % d == 0} | {g * m for m in (2, 3, 4)})
    raise ConfigError(f"--workers {workers} does not split {g} GPUs evenly; use one of "
                      f"{', '.join(map(str, valid))}")


class Local(Executor):
    @classmethod
    def options(cls):
        return {"workers": 2, "retry_failed": False, "pack": None}

    def __init__(self, **options):
        super().__init__(**options)
        if int(self.settings["workers"]) < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.settings['workers']}")
        self.envs = assign(int(self.settings["workers"]), visible_gpus())

    def devices_per_run(self):
        slice_ = self.envs[0].get("CUDA_VISIBLE_DEVICES")
        return None if slice_ is None else len(slice_.split(","))

    def execute(self, sweep_dir, run_dirs, *, log, train_fn=None):
        logs = sweep_dir / "workers"
        logs.mkdir(parents=True, exist_ok=True)
        procs = []
        for k, env in enumerate(self.envs):
            command = [sys.executable, "-m", "attnjax", "work", str(sweep_dir),
                       "--worker-id", f"local-{os.getpid()}-{k}"]
            if self.settings["retry_failed"]:
                command.append("--retry-failed")
            if self.settings["pack"] is not None:  # else each worker's default
                command += ["--pack", str(self.settings["pack"])]
            out = open(logs / f"worker-{k}.log", "a")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(command, env={**os.environ, **env}, stdout=out,
                                           stderr=subprocess.STDOUT), out))
            log(f"worker {k}: pid {procs[-1][0].pid}"
                + (f", {env}" if env else "") + f", log {logs / f'worker-{k}.log'}")
        self._wait(procs, run_dirs, log)

    def _wait(self, procs, run_dirs, log) -> None:
        def forward(signum, frame):
            for p, _ in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        reported: dict[str, str] = {}
        try:
            while True:
                running = any(p.poll() is None for p, _ in procs)
                for r in run_dirs:
                    status = r.status() or "pending"
                    if status in ("done", "failed", "preempted") and reported.get(
                            r.name) != status:
                        reported[r.name] = status
                        finished = sum(s == "done" for s in reported.values())
                        log(f"[{finished}/{len(run_dirs)} done] {r.name}: {status}")
                if not running:
                    break
                time.sleep(1.0)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            for p, out in procs:
                p.wait()
                out.close()
        bad = [(k, p.returncode) for k, (p, _) in enumerate(procs) if p.returncode not in (0, 1)]
        for k, code in bad:
            log(f"worker {k} exited with status {code}; see its log")


EXECUTOR = Local
