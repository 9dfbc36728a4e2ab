"""One run over several processes (hosts): `jax.distributed.initialize` before the backend.

`attnjax run ... --multihost` calls it, and so does a plain `run` when `detected()`: under
SLURM with several tasks (SLURM_NTASKS > 1), with JAX_COORDINATOR_ADDRESS set (then also
JAX_NUM_PROCESSES and JAX_PROCESS_ID: any other launcher), or on a TPU slice whose environment
names the coordinator or several workers (MEGASCALE_COORDINATOR_ADDRESS, TPU_WORKER_HOSTNAMES);
on a Cloud TPU VM pod without them pass --multihost and JAX asks the metadata server. Every
process runs the same command with the same --workdir on a shared filesystem. On CPU the
processes talk through gloo collectives (`jax_cpu_collectives_implementation`).

What a multi-process run does (attnjax/steps.py, parallel.py, train.py):
- `pmap` is given every process's devices (steps.pmap_devices), so gradients and metrics are
  summed over all of them: 2 processes × 4 devices train like 1 process × 8 devices fed the same
  global batch (tests/test_multihost.py, CPU). Per-device copies are read from each process's
  first device's buffer (parallel.unreplicate), never by a program over the devices.
- Each process generates only its rows of every batch (input_pipeline.DataSource). A synthetic
  task draws each host's rows from their own seed, so its batches depend on the number of
  processes, and a checkpoint resumes only under the process count that wrote it (else refused).
- Process 0 alone claims and writes the run dir (config, summary, metrics, events); the others
  check its config and give up with it when it cannot claim. Every process takes part in
  checkpoint saves and restores (orbax's barriers); orbax writes the arrays from process 0.
- After every step the processes agree on stopping (a SIGTERM, a step callback or process 0's
  lost claim, seen by any one of them) with one small all-gather, so all stop and checkpoint at
  the same step; that all-gather also waits for the step to finish (no dispatch ahead).
- There is no elastic recovery: a process that dies makes the others fail (their next
  collective or JAX's coordination service reports it); rerun the same command on every host
  to resume from the last checkpoint.
Tested: two CPU processes on one machine. The SLURM, GPU and TPU launches rely on JAX's own
cluster detection and are not exercised by this project's tests.
"""

from __future__ import annotations

import os


def detected() -> bool:
    """A multi-process launch that JAX can configure from the environment."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return True
    if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):  # a TPU slice of several hosts (GKE)
        return True
    return "JAX_COORDINATOR_ADDRESS" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ


def initialize() -> None:
    import jax

    if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator():
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        kwargs = {"coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
                  "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                  "process_id": int(os.environ["JAX_PROCESS_ID"])}
    jax.distributed.initialize(**kwargs)


def _has_accelerator() -> bool:
    return bool(os.environ.get("CUDA_VISIBLE_DEVICES") or os.path.exists("/dev/nvidia0")
                or os.path.exists("/dev/accel0"))
