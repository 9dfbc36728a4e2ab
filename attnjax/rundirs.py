"""Reading run directories (docs/RUN_DIR.md) into one pandas row each, grouping seeds, curves.

    find_run_dirs(paths)          -> run dirs under the given paths (recursive, sorted)
    load_runs(paths)              -> DataFrame, one row per run dir (summary + flattened config)
    add_groups(df)                -> df plus `group` (all config but seeds) and a readable `label`
    read_curve(run_dir, metric)   -> Series step -> value from metrics.jsonl
    metric_columns(df), reported_metrics(df, metrics, selecting), resolve_key(df, key, option)
                                  -> metric names (`eval/`, `test/`, `eval_len<L>/`), config keys
    find_benchmarks(paths)        -> benchmark.json files under the paths (`attnjax bench`)

Only `summary.json` and `config.json` are read by `load_runs`, so a sweep of a thousand runs
loads in about a second; `metrics.jsonl` is read only when a curve is asked for. A run dir whose
JSON is missing or malformed becomes a row with status `invalid` and a reason, never an error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnjax.registry import unknown_name_message
from attnjax.rundir import CONFIG, METRICS, STATUSES, SUMMARY, RunDir

INVALID = "invalid"
BENCHMARK = "benchmark.json"
NUMERIC_FIELDS = ("step", "num_params", "flops_per_token", "state_size", "steps_per_second",
                  "tokens_per_second", "peak_memory_bytes", "wall_time_s")
TEXT_FIELDS = ("attention", "task", "peak_memory_kind")
CONFIG_PREFIX = "config."
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "bpc", "bpd")
#: Config leaf names that never describe the model or its training (besides seeds):
#: where results go, how often to log, how many devices share the same global batch.
NOT_GROUPED = frozenset(
    {"workdir", "work_dir", "output_dir", "out_dir", "log_dir", "logdir", "checkpoint_dir",
     "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
     "num_devices", "progress_bar", "prefetch_batches", "data_workers", "data_cache",
     "claim_timeout_s", "preempt_grace_s"}
)
ATTENTION_KEY = "config.model.attention"
MISSING_KEY = "<missing>"  # a config key a run does not have, when comparing values


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


# ---------------------------------------------------------------- metric names and keys


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics go up; loss, perplexity and error go down."""
    return not any(word in metric.lower() for word in LOWER_IS_BETTER)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Final-metric columns (`eval/accuracy`, `test_len128/loss`, ...) that some done run has."""
    done = df[df["status"] == "done"]
    return sorted(c for c in df.columns if "/" in c and not c.startswith(CONFIG_PREFIX)
                  and done[c].notna().any())


def split_of(metric: str) -> str:
    """The split of a metric name: 'eval/accuracy' -> 'eval', 'test_len128/loss' -> 'test'."""
    return metric.split("/", 1)[0].split("_len", 1)[0]


def with_split(metric: str, split: str) -> str:
    """'eval_len128/accuracy' with split 'test' -> 'test_len128/accuracy'."""
    prefix, name = metric.split("/", 1)
    return f"{split}{prefix[len(split_of(metric)):]}/{name}"


def default_metrics(df: pd.DataFrame, primary: str | None = None, split: str = "eval") -> list[str]:
    """All `<split>/*` final metrics of done runs, `primary` (or accuracy, else loss) first."""
    found = [c for c in metric_columns(df) if c.startswith(f"{split}/")]
    first = primary or next((f"{split}/{m}" for m in ("accuracy", "loss")
                             if f"{split}/{m}" in found), None)
    return ([first] if first else []) + [m for m in found if m != first]


def has_test(df: pd.DataFrame) -> bool:
    return any(c.startswith("test/") for c in metric_columns(df))


def reported_metrics(df: pd.DataFrame, metrics: Sequence[str] | None,
                     selecting: bool) -> list[str]:
    """The metrics the table shows: `metrics`, or by default every test/ metric when runs log
    test metrics (else every eval/ metric). A bare name (`accuracy`) takes that split's
    prefix; when `selecting`, eval metrics become their test counterparts where runs have them.

    Raises ValueError naming the available metrics for an unknown one.
    """
    known = metric_columns(df)
    split = "test" if has_test(df) else "eval"
    if not metrics:
        return default_metrics(df, split=split)
    out = []
    for metric in metrics:
        name = metric if "/" in metric else f"{split}/{metric}"
        if selecting and split_of(name) == "eval" and with_split(name, "test") in known:
            name = with_split(name, "test")
        if name not in known:
            raise ValueError(unknown_name_message("metric", metric, known or ["(none)"]))
        out.append(name)
    return list(dict.fromkeys(out))


def resolve_key(df: pd.DataFrame, key: str, option: str) -> str:
    """A config column from a short key: `learning_rate`, `model.d_model`, `config.seed`.

    The key may be any dotted suffix that names exactly one config column. Raises ValueError
    naming the swept keys (config values that differ between runs) when it names none.
    """
    columns = [c for c in df.columns if c.startswith(CONFIG_PREFIX)]
    bare = key.removeprefix(CONFIG_PREFIX)
    matches = [c for c in columns if c == CONFIG_PREFIX + bare or c.endswith("." + bare)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"{option} {key!r} is ambiguous: {', '.join(sorted(matches))}")
    swept = [c.removeprefix(CONFIG_PREFIX) for c in swept_keys(df)]
    raise ValueError(unknown_name_message(f"{option} config key", key, swept or ["(none)"]))


def swept_keys(df: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Grouping config columns whose values differ between the runs (seeds excluded)."""
    return [c for c in grouping_columns(df, exclude) if df[c].map(value_key).nunique() > 1]


# ---------------------------------------------------------------- grouping seeds


def is_missing(value: Any) -> bool:
    """None or NaN: how pandas shows a key a run's config (or summary) does not have."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so that they JSON-encode and print plainly."""
    return value.item() if isinstance(value, np.generic) else value


def is_seed_key(column: str) -> bool:
    leaf = column.rsplit(".", 1)[-1]
    return leaf == "seed" or leaf.endswith("_seed")


def grouping_columns(df: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """The config columns that define a group: all but seeds, `NOT_GROUPED` keys and `exclude`."""
    exclude = set(exclude)
    columns = []
    for column in df.columns:
        leaf = column.rsplit(".", 1)[-1]
        if (column.startswith(CONFIG_PREFIX) and not is_seed_key(column)
                and leaf not in NOT_GROUPED and column not in exclude):
            columns.append(column)
    return sorted(columns, key=lambda c: (c != ATTENTION_KEY, c))


def format_value(value: Any) -> str:
    """A config value for a label: 8.0 -> '8', 0.0003 -> '0.0003', 'local' -> 'local'."""
    value = _plain(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.6g}"
    return str(value)


def short_names(columns: list[str]) -> dict[str, str]:
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
    values = {c: firsts[c].map(value_key) for c in columns}
    differ = [c for c in columns if values[c][values[c] != MISSING_KEY].nunique() > 1]
    if len({tuple(values[c][g] for c in differ) for g in firsts.index}) == len(firsts):
        return differ
    return [c for c in columns if values[c].nunique() > 1]


def _labels(firsts: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """group key -> readable label, e.g. `attention=local window_size=8`."""
    keys = _label_keys(firsts, columns)
    names = short_names(keys)
    labels: dict[str, str] = {}
    for group, row in firsts.iterrows():
        parts = [f"{names[c]}={format_value(row[c])}" for c in keys if not is_missing(row[c])]
        label = " ".join(parts) or str(row.get("attention") or "all runs")
        if label in labels.values():  # groups that differ only by a key some of them lack
            label += f" #{len(labels) + 1}"
        labels[group] = label
    return labels


def value_key(value: Any) -> str:
    """A config value as comparable text (JSON; `MISSING_KEY` where a run lacks the key)."""
    return MISSING_KEY if is_missing(value) else json.dumps(_plain(value), default=str)


def task_of(df: pd.DataFrame) -> pd.Series:
    """The task name of each row, '' where unknown."""
    return df["task"].map(lambda t: "" if is_missing(t) else str(t))


def add_groups(df: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.DataFrame:
    """A copy of `df` with `group` (a JSON key) and `label` (readable, unique per task).

    `exclude` names config columns that do not split groups (e.g. a hyper-parameter that a
    selection protocol picks per group); seeds never do.
    """
    df = df.copy()
    columns = grouping_columns(df, exclude)
    records = df[columns].to_dict("records")
    df["group"] = [json.dumps({c: _plain(v) for c, v in r.items() if not is_missing(v)},
                              sort_keys=True, default=str) for r in records]
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
                step, value = record.get("step"), as_float(record.get(metric))
                if isinstance(step, int) and not math.isnan(value):
                    points[step] = value
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    return pd.Series(points, name=metric, dtype=float).sort_index()
