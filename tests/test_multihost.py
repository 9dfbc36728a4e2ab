"""One run over two processes on localhost (jax.distributed with gloo CPU collectives, 4
simulated devices each) trains exactly like one process with 8 devices, writes the run dir from
process 0 only, and stops, checkpoints and resumes as one job.

The two processes each generate only their rows of every batch, and a synthetic task draws a
host's rows from its own seed (input_pipeline.DataSource), so the reference process is fed the
same global batch: the two hosts' rows, concatenated."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np

from attnjax import config as config_lib
from attnjax.rundir import RunDir
from tests.conftest import FAST_COMPILE, REPO, tiny_config

STEPS = dict(num_train_steps=6, log_every_steps=1, eval_every_steps=3, checkpoint_every_steps=3,
             num_devices=0)  # num_devices 0: all local devices (4 per process, or 8)

SCRIPT = """
import json, os, sys
workdir, mode, stop_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
from attnjax import distributed
if mode == "multihost":
    distributed.initialize()
import jax, numpy as np
from attnjax import train
from tests.conftest import tiny_config
if mode == "reference":  # one process fed the global batch that two hosts generate
    class TwoHosts(train.DataSource):
        def host_batch(self, index):
            parts = [self.task.batch(self.split, index, self.batch_size, self.seed, shard=h,
                                     num_shards=2) for h in range(2)]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    train.DataSource = TwoHosts
# process 1 alone asks to stop: both must stop (and checkpoint) at that same step
callback = lambda step: step == stop_at and jax.process_index() == 1
summary = train.train_and_evaluate(tiny_config(**json.loads(os.environ["STEPS"])), workdir,
                                   step_callback=callback)
print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                  "devices": jax.device_count(), "pid": os.getpid(),
                  "status": summary["status"], "step": summary["step"]}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], *, devices: int, process: int | None = None, port: int = 0):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "STEPS": json.dumps(STEPS),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    if process is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(process))
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _two_processes(args: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    return [_start(args, devices=4, process=p, port=port) for p in (0, 1)]


def _finish(procs: list[subprocess.Popen], timeout: float = 150) -> list[str]:
    """Every process's output once all exited 0; all are killed at `timeout` (a hang in a
    collective must not stall the suite)."""
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        raise AssertionError("timed out: " + "\n----\n".join(
            (p.communicate()[0] or "")[-3000:] for p in procs)) from None
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def _reports(outputs: list[str]) -> list[dict]:
    return [json.loads(next(line for line in reversed(out.splitlines())
                            if line.startswith("{"))) for out in outputs]


def _cli_overrides() -> list[str]:
    """`--config.KEY=VALUE` for every leaf where the test config differs from configs/mqar.py."""
    base = config_lib.flatten(config_lib.load_config_file("mqar"))
    tiny = config_lib.flatten(tiny_config(**STEPS))
    return [f"--config.{k}={v}" for k, v in sorted(tiny.items()) if base.get(k) != v]


def test_two_processes_train_like_one_with_eight_devices(tmp_path):
    multi, single = tmp_path / "multihost", tmp_path / "single"
    script = ["-c", SCRIPT]
    # 1. two processes, stopped at step 2 by process 1 alone; the reference alongside
    procs = _two_processes([*script, str(multi), "multihost", "2"])
    reference = _start([*script, str(single), "reference", "0"], devices=8)
    first = _reports(_finish([*procs, reference]))
    assert [(r["process"], r["processes"], r["devices"]) for r in first] == [
        (0, 2, 8), (1, 2, 8), (0, 1, 8)]
    assert [(r["status"], r["step"]) for r in first] == [
        ("preempted", 2), ("preempted", 2), ("done", 6)]
    assert RunDir(multi).read_summary()["checkpoint_step"] == 2
    # 2. the same job through the CLI: resumes from the step-2 checkpoint and finishes
    procs = _two_processes(["-m", "attnjax", "run", "configs/mqar.py", "--multihost",
                            "--workdir", str(multi), *_cli_overrides()])
    pids = [first[0]["pid"], procs[0].pid]  # process 0 of each launch
    for out in _finish(procs):
        assert '"status": "done"' in out and '"step": 6' in out, out[-3000:]

    run, ref = RunDir(multi), RunDir(single)
    summary = run.read_summary()
    assert summary["status"] == "done" and summary["step"] == 6
    assert summary["device"]["process_count"] == 2
    records = run.read_metrics()
    lines = [json.dumps(r, sort_keys=True) for r in records]
    assert len(set(lines)) == len(lines)  # only process 0 logs: no line twice
    loss = lambda rs: [(r["step"], r["train/loss"]) for r in rs if "train/loss" in r]
    assert [s for s, _ in loss(records)] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in loss(records)],
                               [v for _, v in loss(ref.read_metrics())], rtol=1e-5)
    for key in ("eval/loss", "test/loss", "train/grad_norm"):
        np.testing.assert_allclose(summary["final_metrics"][key],
                                   ref.read_summary()["final_metrics"][key], rtol=1e-5)
    # each launch's claim was taken (and released) by its process 0
    claims = [json.loads(c.read_text()) for c in sorted((multi / "claims").glob("claim-*"))]
    assert [c["pid"] for c in claims] == pids and all(c["released"] for c in claims)


def test_multihost_launches_are_detected_from_the_environment(monkeypatch):
    from attnjax import distributed

    for key in ("SLURM_NTASKS", "SLURM_PROCID", "TPU_WORKER_HOSTNAMES", "JAX_COORDINATOR_ADDRESS",
                "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed.detected()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a sweep's one-task SLURM job: one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not distributed.detected()
    monkeypatch.setenv("SLURM_NTASKS", "2")
    assert distributed.detected()
    monkeypatch.delenv("SLURM_NTASKS")
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # a single-host TPU VM
    assert not distributed.detected()
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w-0,w-1")
    assert distributed.detected()
