"""Reading run directories (docs/RUN_DIR.md) into one pandas row each, and their curves.

    find_run_dirs(paths)          -> run dirs under the given paths (recursive, sorted)
    load_runs(paths)              -> DataFrame, one row per run dir (summary + flattened config)
    read_curve(run_dir, metric)   -> Series step -> value from metrics.jsonl
    find_benchmarks(paths)        -> benchmark.json files under the paths (`attnjax bench`)

Only `summary.json` and `config.json` are read by `load_runs`, so a sweep of a thousand runs
loads in about a second; `metrics.jsonl` is read only when a curve is asked for. A run dir whose
JSON is missing or malformed becomes a row with status `invalid` and a reason, never an error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from attnjax.rundir import CONFIG, METRICS, STATUSES, SUMMARY, RunDir

INVALID = "invalid"
BENCHMARK = "benchmark.json"
NUMERIC_FIELDS = ("step", "num_params", "flops_per_token", "state_size", "steps_per_second",
                  "tokens_per_second", "peak_memory_bytes", "wall_time_s")
TEXT_FIELDS = ("attention", "task", "peak_memory_kind")
CONFIG_PREFIX = "config."


is_run_dir = RunDir.is_run_dir


def _walk(root: str) -> Iterator[tuple[str, bool]]:
    """(dir, is_run_dir) for run dirs and benchmark dirs under `root`; run dirs and hidden
    folders are not descended into."""
    if is_run_dir(root):
        yield root, True
        return
    if os.path.isfile(os.path.join(root, BENCHMARK)):
        yield root, False
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            yield from _walk(entry.path)


def _find(paths: Iterable[str | os.PathLike], runs: bool) -> list[str]:
    found: dict[str, str] = {}
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such directory: {path}")
        if not os.path.isdir(path):
            raise NotADirectoryError(f"not a directory: {path}")
        for directory, is_run in _walk(path):
            if is_run == runs:
                found.setdefault(os.path.realpath(directory), directory)
    return list(found.values())


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """All run dirs under `paths`, deduplicated, in a stable order.

    Raises:
      FileNotFoundError: a path does not exist. NotADirectoryError: a path is a file.
    """
    return _find(paths, runs=True)


def find_benchmarks(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The benchmark.json files (written by `attnjax bench`) under `paths`, outside run dirs."""
    return [os.path.join(d, BENCHMARK) for d in _find(paths, runs=False)]


def read_json(path: str) -> tuple[Any, str | None]:
    """(object, None) on success, (None, reason) when missing or malformed; never raises."""
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, f"missing {name}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"malformed {name}: {e}"


def _hashable(value: Any) -> Any:
    """Lists (and tuples) become JSON text so that config values can be grouped on."""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def flatten_config(config: dict[str, Any], prefix: str = CONFIG_PREFIX) -> dict[str, Any]:
    """{'model': {'attention': 'softmax'}} -> {'config.model.attention': 'softmax'}.

    Nested dicts become dotted keys (an empty dict adds none, so `{}` and absent group alike);
    lists stay as JSON text so that they can be grouped on.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _hashable(value)
    return flat


def as_float(value: Any) -> float:
    """A JSON number as float; anything else (null, text, bool) as NaN."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _summary_fields(summary: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Columns taken from a parsed summary.json, and the problems that make it invalid."""
    problems: list[str] = []
    status = summary.get("status")
    if status not in STATUSES:
        problems.append(f"unknown status {status!r} in {SUMMARY}")
    row: dict[str, Any] = {"status": status, "reason": summary.get("reason")}
    row.update({k: as_float(summary.get(k)) for k in NUMERIC_FIELDS})
    row.update({k: _text(summary.get(k)) for k in TEXT_FIELDS})
    final = summary.get("final_metrics")
    if isinstance(final, dict):
        row.update({k: as_float(v) for k, v in final.items()})
    elif status == "done":
        problems.append(f"status done but no final_metrics in {SUMMARY}")
    return row, problems


def _config_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Flattened config columns plus `attention`/`task` names when the config has them."""
    row = flatten_config(config)
    model = config.get("model")
    task = config.get("task")
    if isinstance(model, dict) and isinstance(model.get("attention"), str):
        row["attention"] = model["attention"]
    if isinstance(task, dict) and isinstance(task.get("name"), str):
        row["task"] = task["name"]
    return row


def load_run(run_dir: str) -> dict[str, Any]:
    """One run dir as a flat dict (see `load_runs`); never raises on bad files."""
    row: dict[str, Any] = {"run_dir": run_dir, "status": INVALID, "reason": None}
    problems: list[str] = []
    summary, error = read_json(os.path.join(run_dir, SUMMARY))
    if error is None and not isinstance(summary, dict):
        error = f"{SUMMARY} is not a JSON object"
    if error is None:
        fields, bad = _summary_fields(summary)
        row.update(fields)
        problems += bad
    else:
        problems.append(error)
    config, error = read_json(os.path.join(run_dir, CONFIG))
    if error is None and not isinstance(config, dict):
        error = f"{CONFIG} is not a JSON object"
    if error is None:
        row.update(_config_fields(config))
    else:
        problems.append(error)
    if problems:
        row["status"] = INVALID
        row["reason"] = "; ".join(problems)
    return row


def _column_order(columns: Iterable[str]) -> list[str]:
    """run_dir, status, reason, names, numbers, metrics, then config.* columns."""
    head = ["run_dir", "status", "reason", *TEXT_FIELDS, *NUMERIC_FIELDS]
    columns = list(columns)
    metrics = sorted(c for c in columns if "/" in c and not c.startswith(CONFIG_PREFIX))
    config = sorted(c for c in columns if c.startswith(CONFIG_PREFIX))
    rest = [c for c in columns if c not in head and c not in metrics and c not in config]
    return [*head, *metrics, *rest, *config]


def load_runs(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> pd.DataFrame:
    """One row per run dir found under `paths`.

    Columns: `run_dir`, `status` (running|done|failed|preempted|invalid), `reason`, `task`,
    `attention`, `peak_memory_kind`, the numbers in `NUMERIC_FIELDS` (NaN where a summary
    lacks them), the final metrics (`eval/accuracy`, `test/loss`, `eval_len128/accuracy`, ...)
    and the flattened config (`config.model.attention`, `config.seed`, ...).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    rows = [load_run(run_dir) for run_dir in find_run_dirs(paths)]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=_column_order([]))
    for column in _column_order([]):
        if column not in df.columns:
            df[column] = None
    return df[_column_order(df.columns)]



def read_curve(run_dir: str | os.PathLike, metric: str) -> pd.Series:
    """`metric` by step from the run's metrics.jsonl (last value wins on a repeated step).

    Lines without the metric, and unparsable (half-written) lines, are skipped; a missing file
    gives an empty series.
    """
    needle = json.dumps(metric)
    points: dict[int, float] = {}
    try:
        with open(Path(run_dir) / METRICS, encoding="utf-8") as f:
            for line in f:
                if needle not in line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                step, value = record.get("step"), as_float(record.get(metric))
                if isinstance(step, int) and not math.isnan(value):
                    points[step] = value
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return pd.Series(points, name=metric, dtype=float).sort_index()
