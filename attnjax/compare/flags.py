"""Fairness flags of the comparison table, and the task facts they need.

    table_flags(table, runs, baseline_of, candidates, over, accuracy) -> '; '-joined flags
    chance_of(run)             -> the task's chance accuracy for one run's config (or None)
    softmax_in_disguise(run)   -> a flag when the variant's window/block covers the sequence
    at_chance(mean, ci, chance)-> whether a row's accuracy is indistinguishable from chance

Flags: `params ±x% vs median|baseline` (more than PARAMS_TOLERANCE apart, the LRA rule),
`k/N seeds`, `best KEY at grid edge`, `softmax in disguise` (a window, block, stride, top-k or
landmark count at least the sequence length: the variant computes full softmax attention, or
in the Nyströmformer case its close approximation) and `at chance`.
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any

import pandas as pd

from attnjax.compare.groups import cells, is_missing, plain, value_key
from attnjax.compare.runs import CONFIG_PREFIX

PARAMS_TOLERANCE = 0.10  # the LRA rule (Tay et al. 2021): budgets within 10% are comparable
#: A row is "at chance" when its mean accuracy is at most chance + max(95% CI half-width,
#: CHANCE_MARGIN): within its CI of chance, below it, or (one seed, no CI) within 2 points.
CHANCE_MARGIN = 0.02
TASK_PREFIX = f"{CONFIG_PREFIX}task."
KWARGS_PREFIX = f"{CONFIG_PREFIX}model.attention_kwargs."

#: variant -> the attention_kwargs setting that, at >= the sequence length L, makes the variant
#: see every key (see each file's docstring): local/longformer/based windows, block_local and
#: sinkhorn blocks (one block), strided (the |i - j| < stride band), top-k (k >= keys) and
#: Nyströmformer (one landmark per token: softmax up to the pseudo-inverse iteration).
#: bigbird is checked block by block in `_bigbird_covers`.
COVERING_SETTING = {"local": "window_size", "longformer": "window_size", "based": "window_size",
                    "block_local": "block_size", "sinkhorn": "block_size", "strided": "stride",
                    "topk": "k", "nystromformer": "num_landmarks"}


def _task_settings(run: pd.Series) -> tuple[str | None, dict[str, Any]]:
    name = run.get(f"{TASK_PREFIX}name")
    settings = {c.removeprefix(TASK_PREFIX): plain(v) for c, v in run.items()
                if isinstance(c, str) and c.startswith(TASK_PREFIX) and c != f"{TASK_PREFIX}name"
                and not is_missing(v)}
    return (name if isinstance(name, str) else None), settings


@functools.lru_cache(maxsize=256)
def _task_fact(name: str, settings_json: str, fact: str) -> float | None:
    """`Task.chance_accuracy` or `Task.input_length` of a task class (imported here: the task
    registry needs jax); None when the task is unknown or the fact is not defined for it."""
    try:
        from attnjax import tasks

        cls = tasks.get(name)
        value = getattr(cls, fact)(json.loads(settings_json))
    except Exception:  # a report never fails on an old or foreign run dir
        return None
    return None if value is None else float(value)


def _fact(run: pd.Series, fact: str) -> float | None:
    name, settings = _task_settings(run)
    if name is None:
        return None
    return _task_fact(name, json.dumps(settings, sort_keys=True, default=str), fact)


def chance_of(run: pd.Series) -> float | None:
    """Chance accuracy of the run's task under its settings (`Task.chance_accuracy`)."""
    return _fact(run, "chance_accuracy")


def at_chance(mean: Any, ci: Any, chance: Any) -> bool:
    """mean <= chance + max(ci, CHANCE_MARGIN); False when mean or chance is unknown."""
    if is_missing(mean) or chance is None or is_missing(chance):
        return False
    margin = CHANCE_MARGIN if is_missing(ci) else max(float(ci), CHANCE_MARGIN)
    return float(mean) <= float(chance) + margin


def _bigbird_covers(kwargs: dict[str, Any], length: int) -> bool:
    """Whether every query block sees every key block (window + global + random blocks)."""
    try:
        block, window = int(kwargs.get("block_size", 64)), int(kwargs.get("num_window_blocks", 3))
        globals_, random = int(kwargs.get("num_global_blocks", 2)), int(
            kwargs.get("num_random_blocks", 3))
    except (TypeError, ValueError):
        return False
    n = math.ceil(length / max(block, 1))
    for q in range(n):
        unseen = [k for k in range(n) if abs(q - k) > window // 2 and k >= globals_
                  and q >= globals_]
        if len(unseen) > random:
            return False
    return True


def softmax_in_disguise(run: pd.Series) -> str | None:
    """'softmax in disguise (window_size=64 >= L=64)' when the run's variant covers its task's
    whole input length, else None. L is `Task.input_length` of the run's task settings."""
    attention = run.get(f"{CONFIG_PREFIX}model.attention")
    if attention not in COVERING_SETTING and attention != "bigbird":
        return None
    length = _fact(run, "input_length")
    if length is None:
        return None
    length = int(length)
    kwargs = {c.removeprefix(KWARGS_PREFIX): plain(v) for c, v in run.items()
              if isinstance(c, str) and c.startswith(KWARGS_PREFIX) and not is_missing(v)}
    if attention == "bigbird":
        if _bigbird_covers(kwargs, length):
            return f"softmax in disguise (bigbird blocks cover L={length})"
        return None
    key = COVERING_SETTING[attention]
    value = kwargs.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= length:
        return f"softmax in disguise ({key}={value:g} >= L={length})"
    return None


def table_flags(table: pd.DataFrame, runs: pd.DataFrame, baseline_of: dict[int, int] | None,
                candidates: pd.DataFrame, over: list[str],
                accuracy: str | None = None) -> pd.Series:
    """Short fairness warnings per row (joined by '; '): parameter budget, finished seeds, grid
    edge, softmax in disguise, and (for the `accuracy` metric, with a `chance` column) at chance.
    """
    flags = pd.Series([[] for _ in table.index], table.index, dtype=object)
    launched = runs.groupby("group").size()
    row_cells = cells(table)
    for _, part in table.groupby("task"):
        most = part["n"].max()
        for i in part.index:
            row = table.loc[i]
            same_cell = part.index[row_cells[part.index] == row_cells[i]]
            ref, what = table.loc[same_cell, "num_params"].median(), "median"
            if baseline_of is not None:
                ref, what = (table.at[baseline_of[i], "num_params"], "baseline") \
                    if i in baseline_of else (math.nan, "")
            if not is_missing(row["num_params"]) and not is_missing(ref) and ref > 0:
                change = row["num_params"] / ref - 1.0
                if abs(change) > PARAMS_TOLERANCE:
                    flags[i].append(f"params {change:+.0%} vs {what}")
            expected = max(most, _launched(runs, row, over, launched))
            if row["n"] < expected:
                flags[i].append(f"{row['n']}/{expected} seeds")
            flags[i].extend(_edge_flags(candidates, row["group"], over))
            disguise = softmax_in_disguise(runs.loc[row["run_index"][0]])
            if disguise:
                flags[i].append(disguise)
            if accuracy is not None and at_chance(row[f"{accuracy}_mean"], row[f"{accuracy}_ci"],
                                                  row.get("chance")):
                flags[i].append(f"at chance ({row['chance']:.3g})")
    return flags.map("; ".join)


def _launched(runs: pd.DataFrame, row: pd.Series, over: list[str], launched: pd.Series) -> int:
    """Run dirs of any status in the row's group (and its chosen `over` values)."""
    if not over:
        return int(launched.get(row["group"], 0))
    same = runs[runs["group"] == row["group"]]
    chosen = runs.loc[row["run_index"]]
    for column in over:
        value = chosen[column].iloc[0] if len(chosen) else None
        same = same[same[column].map(value_key) == value_key(value)]
    return len(same)


def _edge_flags(candidates: pd.DataFrame, group: str, over: list[str]) -> list[str]:
    """'best learning_rate at grid edge' when the chosen value is the min or max of >= 3."""
    if candidates.empty:
        return []
    part = candidates[candidates["group"] == group]
    out = []
    for column in over:
        values = pd.to_numeric(part[column], errors="coerce").dropna().unique()
        chosen = pd.to_numeric(part.loc[part["chosen"], column], errors="coerce")
        if len(values) >= 3 and len(chosen) and chosen.iloc[0] in (values.min(), values.max()):
            out.append(f"best {column.rsplit('.', 1)[-1]} at grid edge")
    return out

