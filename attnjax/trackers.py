"""Where a run's numbers go: trackers behind one interface, so the loop logs once.

    jsonl        metrics.jsonl through RunDir: the record compare reads. Always on.
    tensorboard  TensorBoard event files in the run dir (tensorboardX), for eyes.
    wandb        Weights & Biases (`pip install 'attnjax[wandb]'`): one W&B run per run dir,
                 named after it, grouped by sweep, resumed with the run.

`config.logging.trackers` chooses them. A tracker has `log(step, scalars)` and `close()`;
`open_trackers` builds the chosen ones for a run dir. Only process 0 logs: every other
process gets a `Trackers` that drops what it is given.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from attnjax.registry import ConfigError, unknown_name_message
from attnjax.rundir import MANIFEST, RunDir

KINDS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
# in metrics.jsonl and W&B (where it is the run's time across resumes), not in TensorBoard,
# which has its own clock
NOT_IN_TENSORBOARD = ("wall_time_s",)


class Tracker(Protocol):
    def log(self, step: int, scalars: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def check(trackers: Sequence[str] | str) -> tuple[str, ...]:
    """The tracker names as a tuple, checked (ConfigError names the valid ones). 'jsonl,wandb'
    (as a command line gives it) is split at the commas."""
    items = (trackers,) if isinstance(trackers, str) else tuple(trackers)
    names = tuple(n.strip() for item in items for n in str(item).split(",") if n.strip())
    for name in names:
        if name not in KINDS:
            raise ConfigError(unknown_name_message("logging.trackers entry", name, list(KINDS)))
    if "jsonl" not in names:
        raise ConfigError(f"logging.trackers={names!r} lacks 'jsonl': metrics.jsonl is the "
                          "run's record (compare, resume and status read it), so it cannot be "
                          "turned off; add the others beside it, e.g. ('jsonl', 'wandb')")
    return tuple(dict.fromkeys(names))


def wandb_mode(mode: str) -> str:
    """'' = $WANDB_MODE, else 'online'."""
    mode = mode or os.environ.get("WANDB_MODE") or "online"
    if mode not in WANDB_MODES:
        raise ConfigError(f"logging.wandb_mode={mode!r} (or $WANDB_MODE): use one of "
                          f"{', '.join(WANDB_MODES)}")
    return mode


def _numbers(scalars: Mapping[str, Any], drop: Sequence[str] = ()) -> dict[str, float]:
    return {k: v for k, v in scalars.items() if k not in drop
            and isinstance(v, int | float) and not isinstance(v, bool)}


class JsonlTracker:
    """One JSON object per call appended to metrics.jsonl (RunDir owns the file)."""

    def __init__(self, run_dir: RunDir):
        self._run_dir = run_dir

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._run_dir.append_metrics({"step": int(step), **scalars})

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars as TensorBoard events in the run dir."""

    def __init__(self, run_dir: RunDir):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(run_dir.path), flush_secs=30)

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        for key, value in _numbers(scalars, NOT_IN_TENSORBOARD).items():
            self._writer.add_scalar(key, value, int(step))

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.flush()
            writer.close()


def sweep_name(run_dir: RunDir) -> str | None:
    """The sweep dir's name when the run dir is one of a sweep's, else None."""
    parent = run_dir.path.resolve().parent
    return parent.name if (parent / MANIFEST).is_file() else None


def wandb_run_id(run_dir: RunDir) -> str:
    """A stable W&B id for the run dir: '<sweep>.<run>' (the run dir's name alone outside a
    sweep), so a resumed run continues its W&B run and two sweeps whose runs share names do
    not. Characters W&B reserves become '-'; a long id is cut and keeps a hash of the whole."""
    sweep = sweep_name(run_dir)
    text = f"{sweep}.{run_dir.name}" if sweep else run_dir.name
    clean = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-") or "run"
    if len(clean) > 64:
        clean = f"{clean[:55]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return clean


class WandbTracker:
    """One W&B run per run dir: name = the run dir's name, a stable id (`wandb_run_id`) with
    resume='allow', group = logging.wandb_group or the sweep's name, config = the run's
    flattened config. A resumed run logs again from its checkpoint's step; W&B drops steps
    below the last one it holds (it warns), so the rows between the checkpoint and the crash
    keep their first values there (metrics.jsonl is rewritten from the checkpoint)."""

    def __init__(self, run_dir: RunDir, config):
        try:
            import wandb
        except ImportError:
            raise ConfigError("logging.trackers has 'wandb' but wandb is not installed: "
                              "pip install 'attnjax[wandb]' (or drop 'wandb' from "
                              "logging.trackers)") from None
        from attnjax.config import flatten

        logging = config.logging
        self._run = wandb.init(
            project=logging.wandb_project or None, entity=logging.wandb_entity or None,
            group=logging.wandb_group or sweep_name(run_dir), name=run_dir.name,
            id=wandb_run_id(run_dir), resume="allow", mode=wandb_mode(logging.wandb_mode),
            config=flatten(config.to_dict()), dir=os.environ.get("WANDB_DIR") or None,
            reinit="create_new")

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._run.log(_numbers(scalars), step=int(step))

    def close(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.finish()


class Trackers:
    """The chosen trackers of one run, logged to and closed as one."""

    def __init__(self, trackers: Sequence[Tracker] = ()):
        self._trackers = list(trackers)

    def log(self, step: int, scalars: Mapping[str, Any]) -> None:
        for tracker in self._trackers:
            tracker.log(step, scalars)

    def close(self) -> None:
        """Closes every tracker; the first error is raised after all were tried."""
        error = None
        for tracker in self._trackers:
            try:
                tracker.close()
            except Exception as e:
                error = error or e
        self._trackers = []
        if error is not None:
            raise error


def open_trackers(config, run_dir: RunDir, enabled: bool = True) -> Trackers:
    """The trackers `config.logging.trackers` names, for `run_dir`; none when not `enabled`
    (every process but process 0)."""
    if not enabled:
        return Trackers()
    opened: list[Tracker] = []
    try:
        for name in check(config.logging.trackers):
            if name == "jsonl":
                opened.append(JsonlTracker(run_dir))
            elif name == "tensorboard":
                opened.append(TensorBoardTracker(run_dir))
            else:
                opened.append(WandbTracker(run_dir, config))
    except BaseException:
        Trackers(opened).close()
        raise
    return Trackers(opened)
