"""Epoch streams: how the real-data tasks turn (split, index, batch_size, seed, shard) into rows.

Train: the examples form an infinite stream, the concatenation of per-epoch permutations;
epoch e's permutation is `np.random.default_rng([seed, e]).permutation(N)`. Global batch `index`
of size B is stream positions [index·B, (index+1)·B); shard s of n takes the contiguous rows
[s·B/n, (s+1)·B/n) of it. So the global batch does not depend on the number of shards, every
train example is seen exactly once per epoch, and batch(index) is a pure function of its
arguments (a run resumed at step s reads exactly what an uninterrupted run reads).
Eval / test: positions [index·B, (index+1)·B) modulo the split size N, the same for every seed
(wrapping around when the split is exhausted). Classification tasks read them through one fixed
permutation (seeded by EVAL_SEED and the split), so a partial evaluation (num_eval_batches·B < N)
is a uniform sample even when the files are grouped by class; LM tasks read them in file order.

`position(index, batch_size)` -> {"epoch": e, "offset": o}: global batch `index` starts o
examples into epoch e's permutation (e = index·B // N, o = index·B mod N, N = train examples);
the training loop records it with checkpoints and logs.
Cost: one permutation of N per epoch (cached), O(B) per batch after that.

Finite pools of synthetic tasks (config `train_examples` = N > 0, as Zoology trains on a fixed
set): `pool_batch(task, n, ...)` reads the same epoch stream over a pool of N examples made by
the task's own generator in chunks of POOL_CHUNK rows, chunk c from
np.random.default_rng([seed, 0, POOL_STREAM, c]) (`pool(task, seed, n)`: the first N rows of
ceil(N / POOL_CHUNK) chunks, so a smaller pool is a prefix of a larger one). The chunks do not
depend on batch size or shards, so the batches are bit-identical on any number of devices and
hosts. Eval / test keep their own streams (seed EVAL_SEED, split ids 1 and 2, never 0), drawn
independently of the pool, as Zoology draws its test set with another seed: an eval example can
equal a pool example only by chance (none in Zoology's figure-2 MQAR; tests count them).
Cost: the pool is generated once per (task, seed, N) and kept in memory (Zoology figure 2's
largest, MQAR L=256 × 100k, holds 116 MiB and takes ~14 s to make on one CPU core); O(B)
per batch after that.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from attnjax.tasks.base import EVAL_SEED, SPLITS, check_shard


@functools.lru_cache(maxsize=8)
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Epoch `epoch`'s order of the n train examples (read-only, cached)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


POOL_CHUNK = 1024  # pool examples per generator call (fixed: the pool must not depend on B)
POOL_STREAM = 0xFFFFFFFF  # marks pool keys: no train batch index of the infinite stream reaches it


# a pack of K runs reads K pools (one per data_seed) at every step: room for packs of 16 seeds
@functools.lru_cache(maxsize=16)
def pool(task, seed: int, n: int) -> dict[str, np.ndarray]:
    """The n examples of `task`'s finite train pool for `seed` ({key: [n, ...]}, read-only)."""
    if n < 1:
        raise ValueError(f"a train pool needs at least 1 example, got {n}")
    chunks = [task.generate(np.random.default_rng([seed, SPLITS["train"], POOL_STREAM, c]),
                            POOL_CHUNK) for c in range(-(-n // POOL_CHUNK))]
    out = {}
    for key in chunks[0]:
        out[key] = np.concatenate([c[key] for c in chunks])[:n]
        out[key].flags.writeable = False
    return out


def pool_batch(task, n: int, index: int, batch_size: int, seed: int, shard: int = 0,
               num_shards: int = 1) -> dict[str, np.ndarray]:
    """Shard `shard` of `num_shards` of train batch `index` read from the pool of n examples:
    stream positions [index·B + shard·B/n_s, ...) of the per-epoch permutations of the pool."""
    rows = check_shard(batch_size, shard, num_shards)
    ids, _ = train_ids(seed, n, index * batch_size + shard * rows, rows)
    return {key: value[ids] for key, value in pool(task, seed, n).items()}


def position(index: int, batch_size: int, n: int) -> dict[str, int]:
    """Where train batch `index` starts in an epoch stream of n examples (module docstring)."""
    epoch, offset = divmod(index * batch_size, n)
    return {"epoch": int(epoch), "offset": int(offset)}


@functools.lru_cache(maxsize=8)
def eval_order(split: str, n: int) -> np.ndarray:
    """The fixed order in which a classification task reads its eval / test examples."""
    order = np.random.default_rng([EVAL_SEED, SPLITS[split]]).permutation(n)
    order.flags.writeable = False
    return order


def train_ids(seed: int, n: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(example ids [count], epochs [count]) at stream positions [start, start + count)."""
    positions = start + np.arange(count, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n)
    ids = np.empty(count, np.int64)
    for epoch in np.unique(epochs):
        at = epochs == epoch
        ids[at] = permutation(seed, int(epoch), n)[offsets[at]]
    return ids, epochs


class EpochBatches:
    """Mixin for tasks that hold their examples in memory: `batch` and `position` from
    `split_size(split)` and `rows(split, ids, epochs, seed)` (the rows of those example ids)."""

    shuffle_eval: ClassVar[bool] = True  # eval/test through a fixed permutation (else in order)

    def split_size(self, split: str) -> int:
        """Examples (windows, for LM tasks) in `split`."""
        raise NotImplementedError

    def rows(self, split: str, ids: np.ndarray, epochs: np.ndarray,
             seed: int) -> dict[str, np.ndarray]:
        """The batch rows of example ids [b]; `epochs` [b] is the train epoch of each (else 0),
        `seed` the training seed (for per-epoch choices other than the order)."""
        raise NotImplementedError

    def batch(self, split: str, index: int, batch_size: int, seed: int, shard: int = 0,
              num_shards: int = 1) -> dict[str, np.ndarray]:
        rows = check_shard(batch_size, shard, num_shards)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        n = self.split_size(split)
        start = index * batch_size + shard * rows
        if split == "train":
            ids, epochs = train_ids(seed, n, start, rows)
        else:
            ids = (start + np.arange(rows, dtype=np.int64)) % n
            if self.shuffle_eval:
                ids = eval_order(split, n)[ids]
            epochs = np.zeros(rows, np.int64)
        return self.rows(split, ids, epochs, seed)

    def position(self, index: int, batch_size: int) -> dict[str, int]:
        """Where train batch `index` starts: {"epoch": e, "offset": o} (see module docstring)."""
        return position(index, batch_size, self.split_size("train"))
