"""JAX's persistent compilation cache, on by default: a second identical run, or a second
worker of a sweep, loads the compiled train step from disk instead of compiling it again.

    ATTNJAX_COMPILATION_CACHE unset    $XDG_CACHE_HOME/attnjax/jax (default ~/.cache/attnjax/jax)
    ATTNJAX_COMPILATION_CACHE=/a/path  that directory (e.g. on a filesystem a cluster shares)
    ATTNJAX_COMPILATION_CACHE=off      no persistent cache

`enable()` is called once per process before anything compiles (the CLI's run, sweep, work
and bench commands, and train_pack for library use). Programs whose XLA compile takes at least
MIN_COMPILE_TIME_S are cached, whatever their size, so the train, eval and init steps of small
CPU models are cached too; the trivial ones (a reshape) are not worth a file each. The cache
key is XLA's: the program, the jax/jaxlib version, the device and the XLA flags, so a cached
program is only ever used where it was compiled for.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ATTNJAX_COMPILATION_CACHE"
OFF = ("off", "0", "false", "no", "none")
MIN_COMPILE_TIME_S = 0.1

_enabled: list[str | None] = []  # [the directory in use, or None] once enable() ran


def default_dir() -> Path:
    """$XDG_CACHE_HOME/attnjax/jax, or ~/.cache/attnjax/jax."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "attnjax" / "jax"


def directory() -> Path | None:
    """Where the cache lives under the current environment (None: off)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    return Path(value).expanduser() if value else default_dir()


def enable() -> str | None:
    """Turns the cache on for this process as ATTNJAX_COMPILATION_CACHE says (once; later
    calls return the first answer). Returns the directory, or None when off."""
    if _enabled:
        return _enabled[0]
    import jax

    path = directory()
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:  # read-only home, ...: run without the cache rather than fail
            path = None
    if path is not None:
        jax.config.update("jax_compilation_cache_dir", str(path))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # any size
    _enabled.append(None if path is None else str(path))
    return _enabled[0]
