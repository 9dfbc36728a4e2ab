"""The run directory: the one type that owns its schema, its status and its claim.

    <run>/config.json     resolved config (written once, at plan time or by the first run)
    <run>/summary.json    status, reason, step, final metrics, budget, provenance
    <run>/metrics.jsonl   one JSON object per logged step
    <run>/checkpoints/    orbax checkpoints (attnjax.checkpoint)
    <run>/claims/         who trains it now (attnjax.claim)
    <run>/events.out.tfevents.*   TensorBoard

Status values and the transitions a run dir allows:

    pending -> running -> done | failed | preempted;   pending -> failed (it could not start);
    preempted | failed -> running (resume, retry);   running -> running (a worker taking over
    a dead worker's run).   done is final.

Every JSON file is written atomically (a temporary file, then `os.replace`). Only process 0 of
a multi-host run writes. This module imports no jax: compare, status and the executors read run
dirs without it. See docs/RUN_DIR.md.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnjax import claim as claim_lib
from attnjax.registry import ConfigError

CONFIG, SUMMARY, METRICS = "config.json", "summary.json", "metrics.jsonl"
CHECKPOINTS, CLAIMS = "checkpoints", "claims"
MANIFEST = "manifest.json"  # in a sweep dir: a view of its run dirs (attnjax.sweep)
STATUSES = ("pending", "running", "done", "failed", "preempted")
UNFINISHED = ("pending", "running", "preempted")
TRANSITIONS = {
    None: {"pending", "running"},
    "pending": {"pending", "running", "failed"},
    "running": {"running", "done", "failed", "preempted"},
    "preempted": {"running", "failed", "preempted"},
    "failed": {"running", "failed"},
    "done": set(),
}
_UMASK = os.umask(0)
os.umask(_UMASK)


# Top-level config keys (a group: all its keys) that change how a run is operated, not what it
# computes: a resume may change them, and config.json files written before they existed still
# match.
OPERATIONAL_KEYS = ("claim_timeout_s", "preempt_grace_s", "progress_bar", "data_cache", "logging")


def _same_run(a: dict, b: dict) -> bool:
    drop = lambda c: {k: v for k, v in c.items() if k not in OPERATIONAL_KEYS}
    return drop(a) == drop(b)


class RunDirError(ConfigError):
    """A run dir that cannot be used as asked (another config, lost checkpoints, ...)."""


# ---------------------------------------------------------------------------- atomic files


def atomic_write(path: Path | str, write: Callable[[str], None]) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one
    rename: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for sharing
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def read_manifest(sweep_dir: Path | str) -> dict[str, Any]:
    """A sweep dir's manifest.json ({} where there is none or it does not parse: it is a view
    rebuilt from the run dirs, never the only record)."""
    try:
        manifest = json.loads((Path(sweep_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):  # numpy / jax scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_json(path: Path | str) -> Any | None:
    """Parsed JSON, or None when the file is absent."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def clean_number(v: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so the file stays valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


# ---------------------------------------------------------------------------- the run dir


class RunDir:
    """One run's directory. Cheap to create; touches the disk only when asked."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @staticmethod
    def is_run_dir(path: Path | str) -> bool:
        """Any directory holding a summary.json or a config.json."""
        return os.path.isfile(os.path.join(path, SUMMARY)) or os.path.isfile(
            os.path.join(path, CONFIG))

    # -------------------------------------------------------------- config
    def read_config(self) -> dict | None:
        return read_json(self.file(CONFIG))

    def write_config(self, config_json: str,
                     normalize: Callable[[dict], dict] | None = None) -> None:
        """Writes config.json, or checks that the one there is the same config. `normalize`
        maps the stored config to today's form first (e.g. resolving it again fills keys
        added to attnjax since it was written with their defaults)."""
        previous = self.read_config()
        if previous is not None:
            if normalize is not None:
                previous = normalize(previous)
            if not _same_run(previous, json.loads(config_json)):
                raise RunDirError(f"{self.path} holds a run with a different config; choose "
                                  "another --workdir (or delete it to start over)")
            return
        atomic_write_text(self.file(CONFIG), config_json + "\n")

    # -------------------------------------------------------------- summary and status
    def read_summary(self) -> dict[str, Any]:
        """summary.json, {} when absent or half-written by a killed process."""
        try:
            return read_json(self.file(SUMMARY)) or {}
        except ValueError:
            return {}

    def status(self) -> str | None:
        return self.read_summary().get("status")

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Writes summary.json after checking the status transition from the one on disk."""
        new, old = summary.get("status"), self.status()
        if new not in STATUSES:
            raise ValueError(f"unknown status {new!r}; known: {', '.join(STATUSES)}")
        if new not in TRANSITIONS.get(old, set()):
            raise RunDirError(f"{self.path}: status {old!r} cannot become {new!r}")
        atomic_write_json(self.file(SUMMARY), summary)

    def plan(self, config_json: str, fields: dict[str, Any]) -> None:
        """A pending run: config.json and a summary saying `pending` (kept if already there)."""
        self.write_config(config_json)
        if not self.read_summary():
            from attnjax.provenance import now

            self.write_summary({"status": "pending", "reason": None, "step": 0,
                                "final_metrics": {}, "planned_at": now(), **fields})

    # -------------------------------------------------------------- metrics
    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl (a line cut by a crash is skipped)."""
        path = self.file(METRICS)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Keeps the records with step <= `step` (a resume from that checkpoint), rewritten
        atomically; returns them."""
        path = self.file(METRICS)
        if not path.exists():
            return []
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        return kept

    def append_metrics(self, record: dict[str, Any]) -> None:
        record = {k: clean_number(v) for k, v in record.items()}
        with self.file(METRICS).open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    # -------------------------------------------------------------- checkpoints and claims
    def checkpointer(self, keep: int = 2):
        from attnjax.checkpoint import Checkpointer  # imports jax and orbax

        return Checkpointer(self.checkpoints, keep=keep)

    def has_checkpoint(self) -> bool:
        return self.checkpoints.is_dir() and any(
            p.name.isdigit() for p in self.checkpoints.iterdir())

    def claim(self, timeout_s: float, worker: str | None = None) -> claim_lib.Claim:
        """Claims the run for this process (ClaimHeld names a live holder)."""
        return claim_lib.Claim.acquire(self.path / CLAIMS, timeout_s, worker)

    def holder(self) -> claim_lib.Holder | None:
        return claim_lib.current(self.path / CLAIMS)

    def claim_timeout(self, default: float = 300.0) -> float:
        config = self._config_or_none()
        return float((config or {}).get("claim_timeout_s", default))

    def _config_or_none(self) -> dict | None:
        try:
            return self.read_config()
        except ValueError:
            return None

    def live_holder(self) -> claim_lib.Holder | None:
        """The current claim if a live worker holds it (see claim.Holder.alive), else None."""
        holder = self.holder()
        return holder if holder is not None and holder.alive(self.claim_timeout()) else None

    def is_stale(self) -> bool:
        """`running` on disk, but no live worker holds it (killed, machine lost)."""
        return self.live_holder() is None
