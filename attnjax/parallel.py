"""Data-parallel helpers for `jax.pmap` (which JAX now runs as jit + shard_map).

Arrays handed to a pmapped step are placed with the same `NamedSharding` that the step returns
(a 1-D mesh over the devices, axis `AXIS`), so the first and later calls share one compiled
program instead of compiling twice.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "batch"


def _sharding(devices) -> NamedSharding:
    return NamedSharding(Mesh(np.asarray(devices), (AXIS,)), P(AXIS))


def replicate(tree: Any, devices) -> Any:
    """Every leaf x -> [num_devices, *x.shape], one copy per device."""
    n = len(devices)
    stacked = jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x))), tree)
    return jax.device_put(stacked, _sharding(devices))


def unreplicate(tree: Any) -> Any:
    """The first device's copy of every leaf, read from that device's own buffer. Indexing the
    sharded array (`x[0]`) would be a program over all the devices (XLA gathers row 0 with an
    all-reduce): with several processes on CPU, one gloo collective per leaf, which can hang."""
    return jax.tree.map(
        lambda x: x.addressable_data(0)[0] if isinstance(x, jax.Array) else x[0], tree)


def shard(batch: dict[str, np.ndarray], devices) -> dict[str, jax.Array]:
    """Host batch [B, ...] -> device arrays [num_devices, B / num_devices, ...]."""
    n = len(devices)
    split = {k: v.reshape(n, v.shape[0] // n, *v.shape[1:]) for k, v in batch.items()}
    return jax.device_put(split, _sharding(devices))
