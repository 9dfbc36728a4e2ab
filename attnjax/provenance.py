"""What a run records about where and with what it ran: time, versions, devices, git revision,
host and process. Imports no jax at module level (compare and status read run dirs without it)."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
from importlib import metadata
from typing import Any

from attnjax import REPO_ROOT


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def hostname() -> str:
    return socket.gethostname()


def process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (Linux: /proc/<pid>/stat field 22), so that a
    reused pid is not mistaken for the process that wrote a claim; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process `pid` (started at `start`, if known) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return start is None or process_start(pid) in (None, start)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "attnjax"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def git_revision() -> str | None:
    """HEAD of the attnjax checkout, '-dirty' when it has uncommitted changes; None if no git."""
    try:
        run = lambda *a: subprocess.run(
            ["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        rev = run("rev-parse", "HEAD")
        return rev + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def device_info(used: int | None = None) -> dict[str, Any]:
    """Platform and kind of the local devices; `used`: how many the run trains on."""
    import jax

    devices = jax.local_devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "local_count": len(devices),
        "used": used or len(devices),
        "process_count": jax.process_count(),
        "host": hostname(),
    }
