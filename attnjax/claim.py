"""Claims: which worker trains a run dir right now, so that every run is trained exactly once.

A claim is a file `<run>/claims/claim-<n>.json` (worker id, host, pid, the pid's start time,
when claimed). The current claim is the one with the highest n; its modification time is its
heartbeat, refreshed by a thread while the run trains. Taking a run means creating the next
number with an atomic hard link of a complete file (`os.link` fails if the name exists), so of
any number of workers racing on one run dir — processes or machines sharing the filesystem —
exactly one gets it. Claim files are never deleted, so the numbering never goes back.

The current claim is free when it was released (the holder ended cleanly), its process is dead
(same host), it belongs to the same worker id (a requeued SLURM task) or to this very process,
or its heartbeat is older
than the run's `claim_timeout_s` (a machine that died): then the next worker takes over and
resumes from the last checkpoint. A worker that finds its claim superseded (it stalled past the
timeout and another took over) stops without writing anything.
Cost: one small file per claim and one `utime` per heartbeat.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
import uuid
from pathlib import Path

from attnjax import provenance
from attnjax.registry import ConfigError

PREFIX, SUFFIX = "claim-", ".json"


class ClaimHeld(ConfigError):
    """The run dir is being trained by a live worker."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """What the current claim file of a run says."""

    index: int
    worker: str
    host: str
    pid: int
    pid_start: str | None
    claimed_at: str
    heartbeat: float  # the file's mtime (seconds since the epoch)
    released: bool

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.heartbeat

    def alive(self, timeout_s: float, worker: str | None = None) -> bool:
        """Whether this claim still stands against `worker` (None: against anybody)."""
        if self.released or (worker is not None and worker == self.worker):
            return False
        if self.host == provenance.hostname() and self.pid == os.getpid():
            return False  # this very process (a worker handing its run to the train loop)
        if self.host == provenance.hostname() and not provenance.process_alive(
                self.pid, self.pid_start):
            return False
        return self.age() <= timeout_s

    def describe(self) -> str:
        return (f"worker {self.worker} (host {self.host}, pid {self.pid}), last heartbeat "
                f"{self.age():.0f} s ago")


def _index(name: str) -> int | None:
    if name.startswith(PREFIX) and name.endswith(SUFFIX):
        digits = name[len(PREFIX):-len(SUFFIX)]
        return int(digits) if digits.isdigit() else None
    return None


def current(directory: Path) -> Holder | None:
    """The highest-numbered claim in `directory` (a run's claims/), or None."""
    try:
        indices = [i for i in map(_index, os.listdir(directory)) if i is not None]
    except FileNotFoundError:
        return None
    for index in sorted(indices, reverse=True):
        path = directory / f"{PREFIX}{index:06d}{SUFFIX}"
        try:
            info = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except (OSError, ValueError):  # a racing rewrite: read the next one down
            continue
        return Holder(index, str(info.get("worker")), str(info.get("host")),
                      int(info.get("pid", -1)), info.get("pid_start"),
                      str(info.get("claimed_at")), mtime, bool(info.get("released")))
    return None


def default_worker_id() -> str:
    """SLURM_JOB_ID_ARRAYTASK when under SLURM (a requeued task keeps it), else host:pid."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm-{job}" + (f"_{task}" if task else "")
    return f"{provenance.hostname()}:{os.getpid()}"


class Claim:
    """This process's claim on a run dir; `acquire` it, keep it fresh, `release` it."""

    def __init__(self, directory: Path, index: int, worker: str, info: dict):
        self.directory, self.index, self.worker, self._info = directory, index, worker, info
        self.path = directory / f"{PREFIX}{index:06d}{SUFFIX}"
        self.lost = threading.Event()  # set when another worker took the run over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def acquire(cls, directory: Path, timeout_s: float, worker: str | None = None) -> Claim:
        """Creates the next claim, or raises ClaimHeld naming the live holder."""
        worker = worker or default_worker_id()
        directory.mkdir(parents=True, exist_ok=True)
        for _ in range(8):  # each retry means another worker won a race: re-read
            holder = current(directory)
            if holder is not None and holder.alive(timeout_s, worker):
                raise ClaimHeld(f"{directory.parent} is being trained by {holder.describe()}")
            index = 0 if holder is None else holder.index + 1
            info = {"worker": worker, "host": provenance.hostname(), "pid": os.getpid(),
                    "pid_start": provenance.process_start(os.getpid()),
                    "claimed_at": provenance.now(), "released": False,
                    "took_over": None if holder is None or holder.released else holder.worker}
            tmp = directory / f".tmp-{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(info, indent=2) + "\n")
            try:
                os.link(tmp, directory / f"{PREFIX}{index:06d}{SUFFIX}")
            except FileExistsError:
                continue
            finally:
                tmp.unlink(missing_ok=True)
            return cls(directory, index, worker, info)
        holder = current(directory)
        raise ClaimHeld(f"{directory.parent} is contended; last holder: "
                        f"{holder.describe() if holder else 'none'}")

    def is_current(self) -> bool:
        holder = current(self.directory)
        return holder is not None and holder.index == self.index

    def heartbeat(self) -> bool:
        """Refreshes the claim; False (and `lost` set) when another worker has superseded it."""
        if not self.is_current():
            self.lost.set()
            return False
        with contextlib.suppress(OSError):  # a full or flaky disk: the next beat tries again
            os.utime(self.path)
        return True

    def start_heartbeat(self, interval_s: float) -> None:
        if self._thread is not None:
            return

        def beat():
            while not self._stop.wait(interval_s):
                if not self.heartbeat():
                    return

        self._thread = threading.Thread(target=beat, name="attnjax-claim", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Marks the claim released so the next worker need not wait for a timeout."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost.is_set() or not self.is_current():
            return
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        try:
            tmp.write_text(json.dumps({**self._info, "released": True,
                                       "released_at": provenance.now()}, indent=2) + "\n")
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # the pid check or the timeout frees it instead
