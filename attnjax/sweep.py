"""Experiments: expand a study into runs and plan them as run dirs; executors train them.

An experiment file (`experiments/<study>.py`) defines

    get_config()  -> the study's base ConfigDict (usually a configs/ file plus a few changes)
    sweep()       -> a list of override dicts, {dotted.key: value}, one per run
    run_name(overrides) -> optional: a run's directory name (default: its overrides, e.g.
                     `attention-local_seed-0`), for studies whose runs differ in many keys
    compare()     -> optional: how the study is read, {option: value} with options of
                     `attnjax compare` (COMPARE_OPTIONS: metric, select_by, over, x, by,
                     series, baseline); stored in manifest.json, the defaults of
                     `attnjax compare SWEEP_DIR` and of the table a finished sweep prints

`experiments/study.py:arg` calls get_config(arg) and sweep(arg) instead (e.g. a CPU-sized and
an accelerator-sized version of one study); its runs go to runs/<study>-<arg>/ by default.

Planning is separate from execution. `plan()` resolves (and so validates) every run before
anything is written — a typo in any run, a bad sweep(), or a batch that does not divide the
devices stops the whole study with one clear error and no directory — then writes every run dir
(config.json, summary.json `pending`) and `manifest.json`. From then on a run dir is
self-sufficient: workers and executors (attnjax/executors/) never re-read the experiment file.
The manifest is a view rebuilt from the run dirs (`write_manifest`), never the only record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from attnjax import config as config_lib
from attnjax import provenance
from attnjax.registry import ConfigError, unknown_name_message
from attnjax.rundir import MANIFEST, RunDir, atomic_write_json, read_manifest


@dataclasses.dataclass(frozen=True)
class Run:
    name: str  # directory name, unique within the sweep
    overrides: dict[str, Any]  # flat {dotted.key: value}
    config: ml_collections.ConfigDict  # resolved and locked


def split_arg(path: str | Path) -> tuple[Path, str | None]:
    """'experiments/x.py:cpu' -> (Path('experiments/x.py'), 'cpu')."""
    text = str(path)
    if ".py:" in text:  # the argument may itself be a path
        file, arg = text.split(".py:", 1)
        return Path(file + ".py"), arg
    return Path(text), None


def default_workdir(path: str | Path) -> Path:
    file, arg = split_arg(path)
    return Path("runs") / (file.stem + (f"-{_short(arg)}" if arg else ""))


def load_experiment(path: str | Path):
    """Imports an experiment file (`file.py` or `file.py:arg`); it must define get_config() and
    sweep(). With an argument, both are called with it."""
    file, arg = split_arg(path)
    module = config_lib._load_module(file, "experiment")
    missing = [f for f in ("get_config", "sweep") if not callable(getattr(module, f, None))]
    if missing:
        raise ConfigError(f"experiment {file} must define {' and '.join(missing)}()")
    if arg is None:
        return module

    class WithArg:  # the module's functions with the argument bound
        def get_config():
            return module.get_config(arg)

        def sweep():
            return module.sweep(arg)

    WithArg.__doc__ = module.__doc__
    WithArg.__file__ = str(file)
    WithArg.executor = getattr(module, "executor", None)
    WithArg.run_name = getattr(module, "run_name", None)
    if callable(getattr(module, "compare", None)):
        WithArg.compare = staticmethod(lambda: module.compare(arg))
    return WithArg


COMPARE_OPTIONS = ("metric", "select_by", "over", "x", "by", "series", "baseline")


def compare_settings(experiment) -> dict[str, Any]:
    """The experiment's compare() checked: known options, str or list-of-str values."""
    if not callable(getattr(experiment, "compare", None)):
        return {}
    settings = _call(experiment, "compare")
    if not isinstance(settings, Mapping):
        raise ConfigError(f"compare() must return a dict of compare options; got "
                          f"{type(settings).__name__}")
    out = {}
    for key, value in settings.items():
        if key not in COMPARE_OPTIONS:
            raise ConfigError(unknown_name_message("compare() option", key, COMPARE_OPTIONS))
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
            raise ConfigError(f"compare() option {key!r} must be a string or a list of "
                              f"strings; got {value!r}")
        out[key] = value if isinstance(value, str) else list(value)
    return out


def _short(value: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9.+-]+", "-", str(value)).strip("-")
    return text or "none"


MAX_NAME = 200  # characters of a run dir's name (file systems allow 255 bytes)


def run_name(overrides: Mapping[str, Any], all_keys: list[str]) -> str:
    """'attention-local_seed-0': the last key component (the full key where that is ambiguous)."""
    leaves = [k.rsplit(".", 1)[-1] for k in all_keys]
    parts = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and not value:  # {} resets a group: nothing to name
            continue
        leaf = key.rsplit(".", 1)[-1]
        label = leaf if leaves.count(leaf) == 1 else key
        parts.append(f"{label}-{_short(value)}")
    name = "_".join(parts) or "default"
    if len(name) > MAX_NAME:  # a file name has at most 255 bytes: cut, keep it unique by a hash
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}_{digest}"
    return name


def _call(experiment, fn: str):
    """experiment.fn(), any error in the user's code as one ConfigError line."""
    try:
        return getattr(experiment, fn)()
    except ConfigError:
        raise
    except Exception as e:
        where = getattr(experiment, "__file__", "the experiment")
        raise ConfigError(f"experiment {fn}() raised {config_lib.describe_error(e, where)}"
                          ) from None


def _overrides(experiment) -> list[dict[str, Any]]:
    runs = _call(experiment, "sweep")
    if isinstance(runs, Mapping) or not isinstance(runs, list | tuple):
        raise ConfigError(f"sweep() must return a list of override dicts, one per run; got "
                          f"{type(runs).__name__}")
    bad = [i for i, o in enumerate(runs) if not isinstance(o, Mapping)]
    if bad:
        raise ConfigError(f"sweep() must return a list of dicts; item {bad[0]} is "
                          f"{type(runs[bad[0]]).__name__}: {runs[bad[0]]!r}"[:300])
    if not runs:
        raise ConfigError("sweep() returned no runs")
    return [config_lib.flatten(o) for o in runs]


def expand(experiment, devices_per_run: int | None = None) -> list[Run]:
    """Every run of the experiment, validated as the workers will check it (config, devices
    for the batch: `devices_per_run`, default this machine's). Raises ConfigError before
    anything is written."""
    base = _call(experiment, "get_config")
    if not isinstance(base, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() must return an ml_collections.ConfigDict, got "
                          f"{type(base).__name__}")
    overrides_list = _overrides(experiment)
    all_keys = sorted({k for o in overrides_list for k in o})
    runs, seen = [], {}
    for i, overrides in enumerate(overrides_list):
        try:
            cfg = config_lib.resolve(config_lib.apply_overrides(base, overrides))
            _check_devices(cfg, devices_per_run)
        except ConfigError as e:
            raise ConfigError(f"run {i} {overrides}: {e}") from None
        name = _name(experiment, overrides, all_keys)
        if name in seen:
            raise ConfigError(f"runs {seen[name]} and {i} have the same overrides ({name})")
        seen[name] = i
        runs.append(Run(name, overrides, cfg))
    return runs


def _name(experiment, overrides: dict[str, Any], all_keys: list[str]) -> str:
    """The experiment's run_name(overrides) if it has one (checked: one short path
    component), else run_name(overrides, all_keys)."""
    namer = getattr(experiment, "run_name", None)
    if namer is None:
        return run_name(overrides, all_keys)
    try:
        name = namer(overrides)
    except Exception as e:
        where = getattr(experiment, "__file__", "the experiment")
        raise ConfigError(f"experiment run_name() raised {config_lib.describe_error(e, where)}"
                          ) from None
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name \
            or os.sep in name or len(name) > MAX_NAME:
        raise ConfigError(f"experiment run_name() must return a directory name (no '/', at "
                          f"most 200 characters); got {name!r}"[:300])
    return name


def _check_devices(config, devices_per_run: int | None) -> None:
    if devices_per_run is None:
        import jax

        devices_per_run = jax.local_device_count()
    n = config.num_devices or devices_per_run
    if config.num_devices > devices_per_run:
        raise ConfigError(f"num_devices={config.num_devices} but a run gets {devices_per_run}")
    from attnjax import steps

    steps.check_batch(config, n)


def check_workdir(workdir: Path) -> None:
    """ConfigError unless `workdir` is (or can be) a writable directory."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} exists and is not a directory")
    probe = workdir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir {workdir}: {probe} is not a writable directory")


def plan(experiment_path: str | Path, workdir: str | Path | None = None, *,
         devices_per_run: int | None = None) -> list[RunDir]:
    """Writes every run dir of the study (pending) and the manifest; trains nothing.
    Runs already there keep their status (a re-plan resumes the study)."""
    experiment = load_experiment(experiment_path)
    runs = expand(experiment, devices_per_run)
    settings = compare_settings(experiment)
    workdir = Path(workdir or default_workdir(experiment_path))
    check_workdir(workdir)
    out = []
    for run in runs:
        run_dir = RunDir(workdir / run.name)
        run_dir.plan(config_lib.to_json(run.config), {
            "overrides": run.overrides,
            "num_train_steps": run.config.num_train_steps,
            "attention": run.config.model.attention, "task": run.config.task.name})
        out.append(run_dir)
    write_manifest(workdir, str(experiment_path), order=[r.name for r in out],
                   compare=settings)
    return out


def sweep_runs(workdir: Path | str, order: list[str] | None = None) -> list[RunDir]:
    """The run dirs of a sweep dir in the study's order (`order`, else the manifest's), then
    any others by name."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(f"no such sweep directory: {workdir}")
    found = [RunDir(p) for p in sorted(workdir.iterdir())
             if p.is_dir() and not p.name.startswith(".") and RunDir.is_run_dir(p)]
    if order is None:
        order = [e.get("name") for e in read_manifest(workdir).get("runs", [])]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(found, key=lambda r: (rank.get(r.name, sys.maxsize), r.name))


def write_manifest(workdir: Path | str, experiment: str | None = None,
                   order: list[str] | None = None, compare: dict | None = None) -> None:
    """manifest.json rebuilt from the run dirs: name, overrides, status, reason, step; in the
    study's order (`order`, else the previous manifest's); the study's compare settings
    (`compare`, else the previous manifest's)."""
    workdir = Path(workdir)
    old = read_manifest(workdir)
    entries = []
    for run_dir in sweep_runs(workdir, order):
        summary = run_dir.read_summary()
        entries.append({"name": run_dir.name, "overrides": summary.get("overrides", {}),
                        "status": summary.get("status", "pending"),
                        "reason": summary.get("reason"), "step": summary.get("step"),
                        "num_train_steps": summary.get("num_train_steps")})
    atomic_write_json(workdir / MANIFEST, {
        "experiment": experiment or old.get("experiment"), "updated_at": provenance.now(),
        "compare": old.get("compare", {}) if compare is None else compare, "runs": entries})


def run_sweep(
    experiment_path: str | Path,
    workdir: str | Path | None = None,
    *,
    executor: str = "inprocess",
    options: Mapping[str, Any] | None = None,
    train_fn: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> list[tuple[RunDir, dict[str, Any]]]:
    """Plans the study, then has `executor` (attnjax/executors/<name>.py) finish its runs.
    Returns (run dir, summary) pairs in the study's order. `train_fn(config, run_dir)` replaces
    the train loop (tests; in-process executor only)."""
    from attnjax import executors

    workdir = Path(workdir or default_workdir(experiment_path))
    chosen = executors.create(executor, **dict(options or {}))
    run_dirs = plan(experiment_path, workdir, devices_per_run=chosen.devices_per_run())
    try:
        trained = chosen.execute(workdir, run_dirs, log=log, train_fn=train_fn) or []
    finally:
        write_manifest(workdir)
    returned = {r.name: summary for r, summary in trained}
    return [(r, returned.get(r.name) or r.read_summary()) for r in run_dirs]
