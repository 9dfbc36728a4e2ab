"""One run over several hosts: `jax.distributed.initialize` before the backend starts.

`attnjax run ... --multihost` calls it; under SLURM (SLURM_NTASKS > 1) and on multi-host TPU
VMs it is called automatically, and JAX reads the coordinator, process count and id from the
environment. For other launchers set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID. Afterwards every process generates only its rows of each batch
(input_pipeline.DataSource), only process 0 writes the run dir, and every process takes part in
checkpoint saves (orbax coordinates them). On CPU the processes talk through gloo collectives.
"""

from __future__ import annotations

import os


def detected() -> bool:
    """A multi-process launch that JAX can configure from the environment."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
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
