"""Executors: turn planned run dirs into finished ones. They know nothing of training: each
hands run dirs to `attnjax.worker` (`train_run_dir` / `work`) somewhere — this process, local
worker processes, Ray tasks, SLURM array tasks. One file per engine; the file name is the
executor's name (`--executor NAME`), and a new engine (Kubernetes, XManager) is one new file
that defines `EXECUTOR`, a subclass of `Executor`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from attnjax import registry
from attnjax.registry import ConfigError, unknown_name_message
from attnjax.rundir import RunDir


class Executor:
    """Finishes the run dirs of one sweep dir. Options are constructor keywords."""

    # (module, pip extra) of the engine it needs: ("ray", "ray") -> pip install 'attnjax[ray]'
    engine: ClassVar[tuple[str, str] | None] = None

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ConfigError(f"executor {self.name()!r} has no option {unknown[0]!r}; known: "
                              f"{', '.join(self.options()) or 'none'}")
        self.settings = {**self.options(), **options}

    @classmethod
    def name(cls) -> str:
        return cls.__module__.rsplit(".", 1)[-1]

    @classmethod
    def options(cls) -> dict[str, Any]:
        """{option: default}."""
        return {}

    def check_installed(self) -> None:
        if self.engine is not None:
            require(*self.engine)

    def devices_per_run(self) -> int | None:
        """Devices each run will train on (to validate batch sizes at plan time); None: as
        many as this machine has."""
        return None

    def execute(self, sweep_dir: Path, run_dirs: list[RunDir], *,
                log: Callable[[str], None], train_fn=None
                ) -> list[tuple[RunDir, dict[str, Any]]] | None:
        """Finishes `run_dirs` (all in `sweep_dir`); may return (run dir, summary) pairs of the
        runs it trained in this process, else the run dirs are read afterwards."""
        raise NotImplementedError


def names() -> list[str]:
    return registry.names(__name__)


def create(name: str, **options: Any) -> Executor:
    """The executor `name` with its options; ConfigError names the choices or the extra."""
    if name not in names():
        raise ConfigError(unknown_name_message("executor", name, names()))
    module = importlib.import_module(f"{__name__}.{name}")
    cls = module.EXECUTOR
    executor = cls(**{k: v for k, v in options.items() if v is not None})
    executor.check_installed()
    return executor


def fixed_pack(executor: str, pack) -> int:
    """The pack size K for executors that group runs at submit time (no 'auto': the memory
    that decides it is on the remote machines)."""
    if pack == "auto":
        raise ConfigError(f"--pack auto needs the device at hand; give --executor {executor} "
                          "a number (e.g. --pack 8)")
    return 1 if pack is None else int(pack)


def require(module: str, extra: str):
    """Imports the optional engine `module`, or ConfigError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"this executor needs {module}: pip install 'attnjax[{extra}]' "
                          f"(or pip install {module})") from None
