"""Orbax checkpoints in a run's checkpoints/ folder: per step, the (unreplicated) train state
(`state/`) and the data stream's position (`data/`, JSON: see input_pipeline.DataSource.state).

Saves are synchronous and atomic (orbax writes to a temporary folder, then renames), so an
interrupted save never leaves a checkpoint that looks complete. A checkpoint damaged afterwards
(a truncated array file, a missing _METADATA) is skipped with a warning by `restore_latest`,
which falls back to the one before. Multi-host: every process calls save and restore (orbax
coordinates them with barriers); the state saved is the host copy that every process holds
alike, and orbax writes it from process 0.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from attnjax.registry import ConfigError


@contextlib.contextmanager
def _quiet_orbax():
    """orbax logs every failed read (and asyncio "Event loop is closed") at error level before
    it raises; restore_latest reports a damaged checkpoint in one line instead."""
    loggers = [logging.getLogger(n) for n in ("absl", "orbax", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class CheckpointMismatch(ConfigError):
    """A checkpoint of another model structure than the config builds."""


class Checkpointer:
    def __init__(self, directory: Path | str, keep: int = 2):
        self._directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self._directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: Any, data: dict[str, Any]) -> None:
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.device_get(state)), data=ocp.args.JsonSave(data),
        ))
        self._manager.wait_until_finished()

    def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        """(state, data position) saved at `step`; the state with `template`'s structure, as
        host numpy arrays. A checkpoint of another structure is a CheckpointMismatch."""
        try:
            return self._restore(step, template)
        except ValueError as e:
            if "mismatch" not in str(e).lower():
                raise
            raise CheckpointMismatch(
                f"{self._directory / str(step)} does not match the model this code builds from "
                "its config.json (written by another version of attnjax? see summary.json's "
                "git_revision)"
            ) from None

    def restore_latest(self, template: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, data position) of the newest checkpoint that restores, newest first;
        a damaged one is reported with a warning and skipped. None when there is none."""
        for step in reversed(self.all_steps()):
            try:
                with _quiet_orbax():
                    state, data = self.restore(step, template)
            except CheckpointMismatch:
                raise
            except Exception as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                warnings.warn(f"checkpoint {self._directory / str(step)} is damaged "
                              f"({type(e).__name__}: {first}); trying the one before",
                              RuntimeWarning, stacklevel=2)
                continue
            return step, state, data
        return None

    def _restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(template))
        if not (self._directory / str(step) / "state").is_dir():
            # written before checkpoints held the data position (that was the step itself)
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
            return jax.device_get(state), {"next_index": int(step), "legacy": True}
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
        ))
        return jax.device_get(restored["state"]), dict(restored["data"])

    def close(self) -> None:
        self._manager.close()
