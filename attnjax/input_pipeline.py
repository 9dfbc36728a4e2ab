"""The input pipeline: host batches made by numpy in a background thread, already split per
host and per device, prefetched to the devices while the current step runs.

    source = DataSource(task, "train", batch_size, seed)     # this process's rows only
    source.host_batch(index)        -> {key: np.ndarray [B / num_hosts, ...]}
    source.state(next_index)        -> JSON-able position, saved with every checkpoint
    with Prefetcher(source, start, stop, put=lambda b: shard(b, devices)) as batches:
        for index, device_batch in batches: ...

Every batch is a pure function of (task, split, index, batch_size, seed, host, train_examples;
with a finite train pool, `train_examples` > 0, not of the host): the thread only
computes ahead, so the stream is the same with any prefetch depth, and a run resumed at step s
restarts the stream at index s — exactly the batches an uninterrupted run sees. Host h of H
generates rows [h·B/H, (h+1)·B/H) of each global batch (`task.batch(..., shard=h,
num_shards=H)`); `put` then splits those rows over the local devices.
Cost: one thread; at most `depth` batches wait on the devices, so memory is depth × batch.
A task whose generator is slower than the train step (e.g. hard Pathfinder on a GPU) can use
`workers` processes: they compute batches index by index in parallel and the thread hands them
over in order, so the stream is identical to the single-thread one.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import multiprocessing
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jax
import numpy as np

from attnjax.tasks import _epochs
from attnjax.tasks.base import Task

_DONE = object()


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One split of a task as seen by this process (host `host` of `num_hosts`)."""

    task: Task
    split: str
    batch_size: int  # global, over all hosts and devices
    seed: int
    host: int = -1  # -1: jax.process_index()
    num_hosts: int = 0  # 0: jax.process_count()
    train_examples: int = 0  # > 0: train batches from a finite pool of this many (_epochs.py)

    def __post_init__(self):
        if self.host < 0:
            object.__setattr__(self, "host", jax.process_index())
        if self.num_hosts <= 0:
            object.__setattr__(self, "num_hosts", jax.process_count())

    def host_batch(self, index: int) -> dict[str, np.ndarray]:
        """This host's rows of global batch `index`."""
        if self.train_examples and self.split == "train":
            return _epochs.pool_batch(self.task, self.train_examples, index, self.batch_size,
                                      self.seed, shard=self.host, num_shards=self.num_hosts)
        return self.task.batch(self.split, index, self.batch_size, self.seed,
                               shard=self.host, num_shards=self.num_hosts)

    def state(self, next_index: int) -> dict[str, Any]:
        """The stream position before batch `next_index`, as saved in checkpoints."""
        state = {"split": self.split, "next_index": int(next_index),
                 "batch_size": self.batch_size, "seed": self.seed, "num_hosts": self.num_hosts}
        position = getattr(self.task, "position", None)  # real-data tasks: epoch and offset
        if self.train_examples and self.split == "train":
            state["position"] = _epochs.position(next_index, self.batch_size,
                                                 self.train_examples)
        elif position is not None:
            state["position"] = position(next_index, self.batch_size)
        return state


@dataclasses.dataclass(frozen=True)
class PackSource:
    """The train streams of a pack of runs, batch `index` of each stacked on axis 1:
    {key: [B / num_hosts, K, ...]}, so that `put` splits rows over devices as for one run and
    the step vmaps over axis 1. Each run keeps its own stream (its data_seed)."""

    members: tuple[DataSource, ...]

    @property
    def split(self) -> str:
        return self.members[0].split

    def host_batch(self, index: int) -> dict[str, np.ndarray]:
        batches = [m.host_batch(index) for m in self.members]
        return {k: np.stack([b[k] for b in batches], axis=1) for k in batches[0]}


def host_batches(source, indices: Iterable[int], workers: int) -> Iterator[tuple[int, Any]]:
    """(index, host batch) for `indices` in order (read lazily, at most 2·workers ahead);
    with `workers` > 0 made by that many processes."""
    if not workers:
        for index in indices:
            yield index, source.host_batch(index)
        return
    # spawn, not fork: forking a process that runs JAX's threads can deadlock
    context = multiprocessing.get_context("spawn")
    indices = iter(indices)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending: collections.deque = collections.deque()
        try:
            while True:
                while len(pending) < 2 * workers:
                    index = next(indices, None)
                    if index is None:
                        break
                    pending.append((index, pool.submit(source.host_batch, index)))
                if not pending:
                    return
                index, future = pending.popleft()
                yield index, future.result()
        finally:
            for _, future in pending:
                future.cancel()


class Prefetcher:
    """Iterates (index, put(host_batch(index))) for index in [start, stop), computed `depth`
    batches ahead in a daemon thread (batches made by `workers` processes when > 0). An
    exception in the thread is raised in the consumer."""

    def __init__(self, source: DataSource | PackSource, start: int, stop: int,
                 put: Callable[[dict[str, np.ndarray]], Any] = lambda b: b, depth: int = 2,
                 workers: int = 0):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1 (got {depth})")
        self._source, self._put, self._workers = source, put, workers
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._work, args=(start, stop), name=f"attnjax-{source.split}-data",
            daemon=True,
        )
        self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        try:
            batches = host_batches(self._source, range(start, stop), self._workers)
            for index, host in batches:
                if not self._offer((index, self._put(host))):
                    batches.close()
                    return
            self._offer(_DONE)
        except BaseException as e:  # handed to the consumer
            self._offer(e)

    def _offer(self, item) -> bool:
        """Queues `item` unless the consumer closed first; True when queued."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
