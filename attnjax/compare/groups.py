"""Metric names, config keys and groups of seeds: what a row of the comparison is.

    metric_columns(df), reported_metrics(df, metrics, selecting), resolve_key(df, key, option)
                                  -> metric names (`eval/`, `test/`, `eval_len<L>/`), config keys
    add_groups(df)                -> df plus `group` (all config but seeds) and a readable `label`
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnjax.compare.runs import CONFIG_PREFIX
from attnjax.registry import unknown_name_message
from attnjax.rundir import OPERATIONAL_KEYS  # a resume may change them: never a group's difference

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


def plain(value: Any) -> Any:
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
        top = column[len(CONFIG_PREFIX):].split(".", 1)[0]
        if (column.startswith(CONFIG_PREFIX) and not is_seed_key(column)
                and leaf not in NOT_GROUPED and top not in OPERATIONAL_KEYS
                and column not in exclude):
            columns.append(column)
    return sorted(columns, key=lambda c: (c != ATTENTION_KEY, c))


def format_value(value: Any) -> str:
    """A config value for a label: 8.0 -> '8', 0.0003 -> '0.0003', 'local' -> 'local'."""
    value = plain(value)
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
    return MISSING_KEY if is_missing(value) else json.dumps(plain(value), default=str)


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
    df["group"] = [json.dumps({c: plain(v) for c, v in r.items() if not is_missing(v)},
                              sort_keys=True, default=str) for r in records]
    df["label"] = ""
    for _, part in df.groupby(task_of(df), sort=False):
        firsts = part.drop_duplicates("group").set_index("group")
        labels = _labels(firsts, columns)
        df.loc[part.index, "label"] = part["group"].map(labels)
    return df



def sort_key(values: Iterable[Any]) -> tuple:
    """Numbers before text, numbers by value: a natural order for config values."""
    values = [plain(v) for v in values]
    return tuple((0, v, "") if isinstance(v, int | float) and not is_missing(v) else
                 (1, 0, str(v)) for v in values)


def config_of(group: str) -> dict[str, Any]:
    """A group key (JSON) back as {config column: value}."""
    return json.loads(group) if group else {}


def axis_columns(configs: Sequence[dict[str, Any]]) -> list[str]:
    """The study's axes: config columns outside the attention whose values differ between the
    rows of one variant (d_model, seq_len, ...). A setting fixed per variant (a study that gives
    attention its positions or dropout and the other mixers none) describes the variant."""
    variants: dict[str, list[dict]] = {}
    for config in configs:
        variant = json.dumps({k: v for k, v in config.items() if k.startswith(ATTENTION_KEY)},
                             sort_keys=True, default=str)
        variants.setdefault(variant, []).append(config)
    columns = sorted({c for config in configs for c in config if not c.startswith(ATTENTION_KEY)})
    return [c for c in columns
            if any(len({format_value(config.get(c)) for config in rows}) > 1
                   for rows in variants.values())]


def cells(table: pd.DataFrame) -> pd.Series:
    """Each row's values of the study's axes (`axis_columns`) as a sorted tuple: rows of
    different variants in one cell of the sweep compare with each other."""
    configs = table["group"].map(config_of)
    axes = axis_columns(list(configs))
    return configs.map(lambda c: tuple(sorted((k, c.get(k)) for k in axes)))


def differing_labels(keys: dict[Any, dict[str, Any]], empty: str = "all") -> dict[Any, str]:
    """Readable labels for configs: `name=value` of the settings that differ between them
    (short names; `empty` where nothing differs)."""
    columns = sorted({c for k in keys.values() for c in k})
    differ = [c for c in columns if len({json.dumps(k.get(c), default=str)
                                         for k in keys.values()}) > 1]
    names = short_names(differ)
    return {line: " ".join(f"{names[c]}={format_value(v[c])}" for c in differ if c in v)
            or empty for line, v in keys.items()}
