"""Reading run directories (docs/RUN_DIR.md) into one pandas row each, grouping seeds, curves.

    find_run_dirs(paths)          -> run dirs under the given paths (recursive, sorted)
    load_runs(paths)              -> DataFrame, one row per run dir (summary + flattened config)
    add_groups(df)                -> df plus `group` (all config but seeds) and a readable `label`
    read_curve(run_dir, metric)   -> Series step -> value from metrics.jsonl

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

import numpy as np
import pandas as pd

SUMMARY = "summary.json"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
STATUSES = ("running", "done", "failed", "preempted")
INVALID = "invalid"
NUMERIC_FIELDS = ("step", "num_params", "steps_per_second", "tokens_per_second", "wall_time_s")
CONFIG_PREFIX = "config."
#: Config leaf names that never describe the model or its training (besides seeds):
#: where results go, how often to log, how many devices share the same global batch.
NOT_GROUPED = frozenset(
    {"workdir", "work_dir", "output_dir", "out_dir", "log_dir", "logdir", "checkpoint_dir",
     "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
     "num_devices", "progress_bar"}
)
ATTENTION_KEY = "config.model.attention"
MISSING_KEY = "<missing>"  # a config key a run does not have, when comparing values


def is_run_dir(path: str | os.PathLike) -> bool:
    """A run dir is any directory holding a summary.json or a config.json."""
    return os.path.isfile(os.path.join(path, SUMMARY)) or os.path.isfile(
        os.path.join(path, CONFIG)
    )


def _walk_run_dirs(root: str) -> Iterator[str]:
    """Run dirs under `root`, not descending into run dirs or hidden folders."""
    if is_run_dir(root):
        yield root
        return
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith("."):
            yield from _walk_run_dirs(entry.path)


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[str]:
    """All run dirs under `paths`, deduplicated, in a stable order.

    Raises:
      FileNotFoundError: a path does not exist. NotADirectoryError: a path is a file.
    """
    found: dict[str, str] = {}
    for path in paths:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such directory: {path}")
        if not os.path.isdir(path):
            raise NotADirectoryError(f"not a directory: {path}")
        for run_dir in _walk_run_dirs(path):
            found.setdefault(os.path.realpath(run_dir), run_dir)
    return list(found.values())


def _read_json(path: str) -> tuple[Any, str | None]:
    """(object, None) on success, (None, reason) when missing or malformed."""
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


def _number(value: Any) -> float:
    """A JSON number as float; anything else (null, text, bool) as NaN."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _summary_fields(summary: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Columns taken from a parsed summary.json, and the problems that make it invalid."""
    problems: list[str] = []
    status = summary.get("status")
    if status not in STATUSES:
        problems.append(f"unknown status {status!r} in {SUMMARY}")
    row: dict[str, Any] = {"status": status, "reason": summary.get("reason")}
    row.update({k: _number(summary.get(k)) for k in NUMERIC_FIELDS})
    row["attention"] = summary.get("attention")
    row["task"] = summary.get("task")
    final = summary.get("final_metrics")
    if isinstance(final, dict):
        row.update({k: _number(v) for k, v in final.items()})
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
    summary, error = _read_json(os.path.join(run_dir, SUMMARY))
    if error is None and not isinstance(summary, dict):
        error = f"{SUMMARY} is not a JSON object"
    if error is None:
        fields, bad = _summary_fields(summary)
        row.update(fields)
        problems += bad
    else:
        problems.append(error)
    config, error = _read_json(os.path.join(run_dir, CONFIG))
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
    head = ["run_dir", "status", "reason", "task", "attention", *NUMERIC_FIELDS]
    columns = list(columns)
    metrics = sorted(c for c in columns if "/" in c and not c.startswith(CONFIG_PREFIX))
    config = sorted(c for c in columns if c.startswith(CONFIG_PREFIX))
    rest = [c for c in columns if c not in head and c not in metrics and c not in config]
    return [*head, *metrics, *rest, *config]


def load_runs(paths: Iterable[str | os.PathLike] | str | os.PathLike) -> pd.DataFrame:
    """One row per run dir found under `paths`.

    Columns: `run_dir`, `status` (running|done|failed|preempted|invalid), `reason`, `task`,
    `attention`, `step`, `num_params`, `steps_per_second`, `tokens_per_second`, `wall_time_s`,
    the final metrics (`eval/accuracy`, `train/loss`, ...) and the flattened config
    (`config.model.attention`, `config.seed`, ...).
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


# ---------------------------------------------------------------- grouping seeds


def is_missing(value: Any) -> bool:
    """None or NaN: how pandas shows a key a run's config (or summary) does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so that they JSON-encode and print plainly."""
    return value.item() if isinstance(value, np.generic) else value


def grouping_columns(df: pd.DataFrame) -> list[str]:
    """The config columns that define a group: all but seeds and `NOT_GROUPED` keys."""
    columns = []
    for column in df.columns:
        leaf = column.rsplit(".", 1)[-1]
        seed = leaf == "seed" or leaf.endswith("_seed")
        if column.startswith(CONFIG_PREFIX) and not seed and leaf not in NOT_GROUPED:
            columns.append(column)
    return sorted(columns, key=lambda c: (c != ATTENTION_KEY, c))


def _group_key(row: pd.Series, columns: list[str]) -> str:
    values = {c: _plain(row[c]) for c in columns if not is_missing(row[c])}
    return json.dumps(values, sort_keys=True, default=str)


def format_value(value: Any) -> str:
    """A config value for a label: 8.0 -> '8', 0.0003 -> '0.0003', 'local' -> 'local'."""
    value = _plain(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return str(value)


def _short_names(columns: list[str]) -> dict[str, str]:
    """Shortest dotted suffix of each key that is unique among `columns`."""
    parts = {c: c.removeprefix(CONFIG_PREFIX).split(".") for c in columns}
    names = {}
    for column, words in parts.items():
        for n in range(1, len(words) + 1):
            name = ".".join(words[-n:])
            others = [".".join(w[-n:]) for c, w in parts.items() if c != column]
            if name not in others:
                break
        names[column] = name
    return names


def _label_keys(firsts: pd.DataFrame, columns: list[str]) -> list[str]:
    """The keys a label shows: those with different values in groups that set them.

    A key only some groups have (a variant's own setting, such as softmax's `implementation`)
    is added only when the labels would otherwise not tell the groups apart.
    """
    values = {c: firsts[c].map(_group_key_value) for c in columns}
    differ = [c for c in columns if values[c][values[c] != MISSING_KEY].nunique() > 1]
    if len({tuple(values[c][g] for c in differ) for g in firsts.index}) == len(firsts):
        return differ
    return [c for c in columns if values[c].nunique() > 1]


def _labels(firsts: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """group key -> readable label, e.g. `attention=local window_size=8`."""
    keys = _label_keys(firsts, columns)
    names = _short_names(keys)
    labels: dict[str, str] = {}
    for group, row in firsts.iterrows():
        parts = [f"{names[c]}={format_value(row[c])}" for c in keys if not is_missing(row[c])]
        label = " ".join(parts) or str(row.get("attention") or "all runs")
        if label in labels.values():  # groups that differ only by a key some of them lack
            label += f" #{len(labels) + 1}"
        labels[group] = label
    return labels


def _group_key_value(value: Any) -> str:
    return MISSING_KEY if is_missing(value) else json.dumps(_plain(value), default=str)


def task_of(df: pd.DataFrame) -> pd.Series:
    """The task name of each row, '' where unknown."""
    return df["task"].map(lambda t: "" if is_missing(t) else str(t))


def add_groups(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` with `group` (a JSON key) and `label` (readable, unique per task)."""
    df = df.copy()
    columns = grouping_columns(df)
    df["group"] = [_group_key(row, columns) for _, row in df.iterrows()]
    df["label"] = ""
    for _, part in df.groupby(task_of(df), sort=False):
        firsts = part.drop_duplicates("group").set_index("group")
        labels = _labels(firsts, columns)
        df.loc[part.index, "label"] = part["group"].map(labels)
    return df


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
                step, value = record.get("step"), _number(record.get(metric))
                if isinstance(step, int) and not math.isnan(value):
                    points[step] = value
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return pd.Series(points, name=metric, dtype=float).sort_index()
