"""An on-disk cache of a data stream's batches, so that a slow generator runs once.

    source = data_cache.cached(DataSource(task, "train", B, seed), start, stop, workers=8)
    source.host_batch(i)    # memory-mapped, bit-identical to task.batch(...)

A run with `data_cache=True` first generates the batches it will read — [start, stop) of its
train stream, its fixed eval and test batches — into the cache, with its `data_workers`
processes and a progress bar, then trains from memory-mapped files, so generation never holds
the step back. Every later run that reads the same stream (another variant or learning rate, a
resume, another worker of the sweep) finds it there and starts at once. Hard Pathfinder makes
~0.6 batches/s per core at batch 256; a GPU steps far faster than that.

Key: sha256 of the task's class and settings, the split, seed, batch size, host and number of
hosts, the source code of attnjax/tasks/ (any change to a generator makes new entries) and
numpy's version. Batches are a pure function of those, so a cached batch is exactly the one the
generator would make (tests/test_data_cache.py compares them bit for bit).
Layout: <root>/<task>-<split>-<key[:16]>/
          key.json                what the key hashes (for humans)
          chunk-<first>-<count>/  batches [first, first + count): one <key>.npy per batch entry,
                                  [count, rows, ...], integers in the narrowest integer dtype
                                  that holds them, and meta.json (dtypes; an entry that is
                                  constant over the chunk is stored as its one value)
Chunks start at multiples of CHUNK_BATCHES (the last one of a request may be shorter). A chunk
is written to a temporary directory and renamed into place, so a reader never sees half of
one; two processes filling the same cache (workers of a sweep) start at different chunks and
skip those the other has finished, and if both write one, the first rename wins (same bytes).
Root: ATTNJAX_DATA_CACHE, else $XDG_CACHE_HOME/attnjax/data (~/.cache/attnjax/data).
Disk: about the batches' bytes after narrowing — hard Pathfinder-32 at batch 256 is 0.25 MiB a
batch (the all-true padding mask is one value), 5 GiB for 20,000 steps. A fill that would not
fit on the disk is skipped with a warning and the run generates its batches as before.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from attnjax.input_pipeline import DataSource, host_batches

ENV = "ATTNJAX_DATA_CACHE"
CHUNK_BATCHES = 64
FORMAT = 1
_INTS = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32)


def root() -> Path:
    """ATTNJAX_DATA_CACHE, else $XDG_CACHE_HOME/attnjax/data (default ~/.cache/attnjax/data)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attnjax" / "data"


@functools.lru_cache(maxsize=1)
def _tasks_code() -> str:
    """A hash of every generator's source (attnjax/tasks/*.py)."""
    h = hashlib.sha256()
    for f in sorted((Path(__file__).parent / "tasks").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def key_of(source: DataSource) -> dict[str, Any]:
    """What a cache entry depends on (hashed into its directory name)."""
    task = source.task
    return {"format": FORMAT, "task": f"{type(task).__module__}.{type(task).__qualname__}",
            "settings": dataclasses.asdict(task), "split": source.split, "seed": source.seed,
            "batch_size": source.batch_size, "host": source.host, "num_hosts": source.num_hosts,
            "chunk_batches": CHUNK_BATCHES, "tasks_code": _tasks_code(),
            "numpy": np.__version__,
            # a finite train pool (absent when 0, so the keys of existing caches still match)
            **({"train_examples": source.train_examples} if source.train_examples else {})}


def _encode(a: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(array to store or None, meta) of one batch entry stacked over a chunk [n, rows, ...]."""
    meta: dict[str, Any] = {"dtype": a.dtype.str}
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.size and a.dtype.itemsize in (1, 2, 4, 8):
        bits = flat.view(f"u{a.dtype.itemsize}")
        if (bits == bits[0]).all():  # constant, bit for bit (-0.0, NaN payloads kept)
            meta["const"] = flat[:1].tobytes().hex()
            return None, meta
    if a.dtype.kind in "iu" and a.size:
        lo, hi = int(a.min()), int(a.max())
        narrow = next((t for t in _INTS if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max),
                      None)
        if narrow is not None and np.dtype(narrow).itemsize < a.dtype.itemsize:
            a = a.astype(narrow)
    return a, meta


class BatchCache:
    """The cached batches of one DataSource (see the module docstring)."""

    def __init__(self, source: DataSource, root_dir: str | Path | None = None):
        self.source = source
        self.info = key_of(source)
        digest = hashlib.sha256(json.dumps(self.info, sort_keys=True, default=str).encode())
        name = self.info["task"].rsplit(".", 1)[-1].lower()
        self.dir = Path(root_dir or root()) / f"{name}-{source.split}-{digest.hexdigest()[:16]}"
        self._listing: dict[int, tuple[int, str]] = {}  # first -> (count, dir name)
        self._open: dict[str, tuple[dict, dict]] = {}  # dir name -> (meta, memmaps)

    def __getstate__(self):  # memory maps stay in the process that opened them
        return {**self.__dict__, "_open": {}}

    # ------------------------------------------------------------------ reading
    def _scan(self) -> None:
        listing: dict[int, tuple[int, str]] = {}
        names = [e.name for e in os.scandir(self.dir)] if self.dir.is_dir() else []
        for name in names:
            parts = name.split("-")
            if len(parts) == 3 and parts[0] == "chunk":
                first, count = int(parts[1]), int(parts[2])
                if count > listing.get(first, (0, ""))[0]:
                    listing[first] = (count, name)
        self._listing = listing

    def _chunk(self, index: int) -> tuple[int, str] | None:
        """(first, dir name) of the chunk holding batch `index`, None when not cached."""
        first = index // CHUNK_BATCHES * CHUNK_BATCHES
        for rescan in (False, True):
            if rescan:
                self._scan()
            count, name = self._listing.get(first, (0, ""))
            if count > index - first:
                return first, name
        return None

    def has(self, index: int) -> bool:
        return self._chunk(index) is not None

    def read(self, index: int) -> dict[str, np.ndarray]:
        """Batch `index` from the cache (KeyError when it is not there)."""
        found = self._chunk(index)
        if found is None:
            raise KeyError(f"batch {index} is not in {self.dir}")
        first, name = found
        if name not in self._open:
            meta = json.loads((self.dir / name / "meta.json").read_text())
            maps = {k: np.load(self.dir / name / f"{k}.npy", mmap_mode="r")
                    for k, m in meta["arrays"].items() if "const" not in m}
            self._open[name] = (meta, maps)
        meta, maps = self._open[name]
        out = {}
        for key, m in meta["arrays"].items():
            dtype = np.dtype(m["dtype"])
            if "const" in m:
                value = np.frombuffer(bytes.fromhex(m["const"]), dtype)[0]
                out[key] = np.full(m["shape"][1:], value, dtype)
            else:
                out[key] = np.array(maps[key][index - first], dtype=dtype)
        return out

    # ------------------------------------------------------------------ writing
    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(first, count) of the chunks to write so that [start, stop) is cached."""
        self._scan()
        out = []
        for first in range(start // CHUNK_BATCHES * CHUNK_BATCHES, stop, CHUNK_BATCHES):
            count = min(first + CHUNK_BATCHES, stop) - first
            if self._listing.get(first, (0, ""))[0] < count:
                out.append((first, count))
        return out

    def _write(self, first: int, batches: list[dict[str, np.ndarray]]) -> None:
        count = len(batches)
        tmp = self.dir / f".tmp-{first}-{count}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        meta: dict[str, Any] = {"first": first, "count": count, "arrays": {}}
        for key in batches[0]:
            shapes = {b[key].shape for b in batches}
            if len(shapes) > 1:
                shutil.rmtree(tmp, ignore_errors=True)
                raise ValueError(f"data_cache needs batches of one shape; {key!r} has {shapes}")
            stacked = np.stack([b[key] for b in batches])  # [count, rows, ...]
            stored, m = _encode(stacked)
            m["shape"] = list(stacked.shape)
            if stored is not None:
                np.save(tmp / f"{key}.npy", stored)
            meta["arrays"][key] = m
        (tmp / "meta.json").write_text(json.dumps(meta))
        name = f"chunk-{first:09d}-{count}"
        try:
            os.rename(tmp, self.dir / name)
        except OSError:  # another process wrote it first (the same bytes)
            shutil.rmtree(tmp, ignore_errors=True)
            return
        for old in self.dir.glob(f"chunk-{first:09d}-*"):  # shorter chunks it supersedes
            if old.name != name and int(old.name.rsplit("-", 1)[1]) < count:
                shutil.rmtree(old, ignore_errors=True)

    def _fits(self, todo: list[tuple[int, int]]) -> bool:
        """Whether the chunks to write fit on the disk (estimated from one batch)."""
        sample = self.source.host_batch(todo[0][0])
        stored = [_encode(np.asarray(v))[0] for v in sample.values()]
        per_batch = sum(0 if a is None else a.nbytes for a in stored)
        need = per_batch * sum(c for _, c in todo)
        free = shutil.disk_usage(self.dir).free
        if need > 0.9 * free:
            warnings.warn(f"data cache: {need / 2**30:.1f} GiB of batches would not fit in "
                          f"{self.dir} ({free / 2**30:.1f} GiB free); generating them on the "
                          f"fly instead (set {ENV} to a larger disk)", stacklevel=3)
            return False
        return True

    def fill(self, start: int, stop: int, workers: int = 0, progress: bool = False) -> bool:
        """Generates the batches of [start, stop) not cached yet (with `workers` processes);
        False when they would not fit on the disk (nothing written)."""
        todo = self.missing(start, stop)
        if not todo:
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._fits(todo):
            return False
        key_file = self.dir / "key.json"
        if not key_file.exists():
            tmp = self.dir / f".key-{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True, default=str))
            os.replace(tmp, key_file)
        turn = random.Random(os.getpid()).randrange(len(todo))  # concurrent fillers spread out
        todo = todo[turn:] + todo[:turn]
        planned: list[tuple[int, int]] = []

        def indices():
            for first, count in todo:
                if not self.missing(first, first + count):  # another process wrote it
                    bar.update(count)
                    continue
                planned.append((first, count))
                yield from range(first, first + count)

        from tqdm import tqdm

        task = self.info["task"].rsplit(".", 1)[-1]
        with tqdm(total=sum(c for _, c in todo), disable=not progress, unit="batch",
                  desc=f"data cache: {task} {self.source.split}", leave=False) as bar:
            batches: list[dict[str, np.ndarray]] = []
            for _, batch in host_batches(self.source, indices(), workers):
                batches.append(batch)
                bar.update(1)
                first, count = planned[0]
                if len(batches) == count:
                    self._write(first, batches)
                    planned.pop(0)
                    batches = []
        self._scan()
        return True


@dataclasses.dataclass(frozen=True)
class CachedSource:
    """A DataSource whose batches come from its cache when there (generated when not)."""

    source: DataSource
    cache: BatchCache

    @property
    def split(self) -> str:
        return self.source.split

    def host_batch(self, index: int) -> dict[str, np.ndarray]:
        if self.cache.has(index):
            return self.cache.read(index)
        return self.source.host_batch(index)

    def state(self, next_index: int) -> dict[str, Any]:
        return self.source.state(next_index)


def cached(source: DataSource, start: int, stop: int, *, workers: int = 0,
           progress: bool = False, root_dir: str | Path | None = None
           ) -> DataSource | CachedSource:
    """`source` reading batches [start, stop) from the cache, filled first; `source` itself
    when the cache would not fit on the disk."""
    cache = BatchCache(source, root_dir)
    return CachedSource(source, cache) if cache.fill(start, stop, workers, progress) else source
