"""The comparison: group seeds, select hyper-parameters on validation, statistics, flags.

    analyze(df, metrics, select_by=..., over=..., baseline=..., test=...) -> Analysis
    summarize(df, metrics=None, ...)    -> analyze(...).table: one row per reported group
    select_hyperparameters(runs, select_by, over) -> (chosen runs' index, candidates table)

Runs are grouped by every config key except seeds, output/logging settings
(`attnjax.compare.groups.NOT_GROUPED`) and the `--over` keys; a group's label names the config
values that differ between groups (`attention=local window_size=8`). Only runs with status
`done` enter the statistics. Fairness flags are computed in `attnjax.compare.flags`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attnjax import stats
from attnjax.compare import flags
from attnjax.compare.groups import (
    ATTENTION_KEY,
    add_groups,
    cells,
    config_of,
    default_metrics,
    format_value,
    higher_is_better,
    is_missing,
    metric_columns,
    reported_metrics,
    resolve_key,
    sort_key,
    split_of,
    task_of,
    with_split,
)
from attnjax.compare.runs import CONFIG_PREFIX, INVALID
from attnjax.registry import unknown_name_message

NOT_DONE_ORDER = ("running", "failed", "preempted", "pending", INVALID)
BUDGET = ("num_params", "flops_per_token", "state_size", "steps_per_second", "tokens_per_second",
          "peak_memory_bytes")


@dataclasses.dataclass
class Analysis:
    """Everything the report shows; `table` has one row per reported group (see `analyze`)."""

    table: pd.DataFrame
    metrics: list[str]  # reported metrics, the primary one first
    runs: pd.DataFrame  # every run, with `task`, `group` and `label`
    select_by: str | None = None
    over: list[str] = dataclasses.field(default_factory=list)  # config columns
    baseline: str | None = None
    test: str = "welch"
    candidates: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    notes: list[str] = dataclasses.field(default_factory=list)


# ---------------------------------------------------------------- selection


def check_selection_metric(df: pd.DataFrame, select_by: str) -> None:
    """`select_by` must be a validation (`eval/`, `eval_len<L>/`) metric that runs report."""
    if split_of(select_by) != "eval":
        suggestion = with_split(select_by, "eval") if "/" in select_by else f"eval/{select_by}"
        raise ValueError(f"--select-by {select_by!r}: selection uses the validation split only "
                         f"(never test); use an eval/ metric such as {suggestion!r}")
    known = [m for m in metric_columns(df) if split_of(m) == "eval"]
    if select_by not in known:
        raise ValueError(unknown_name_message("--select-by metric", select_by,
                                              known or ["(none)"]))


def select_hyperparameters(runs: pd.DataFrame, select_by: str,
                           over: Sequence[str]) -> tuple[pd.Index, pd.DataFrame]:
    """Per group, the `over` values with the best mean `select_by`; only those columns are read.

    `runs` are done runs with `task`, `group` and `label` columns. Returns the index of the
    chosen runs and one row per candidate (task, label, over values, mean, std, n, chosen).
    Ties go to the candidate with more seeds, then to the first in sorted order.
    """
    over = list(over)
    view = runs[["task", "group", "label", *over, select_by]]  # never a test/ column
    candidate = [json.dumps([None if is_missing(v) else v for v in values], default=str)
                 for values in view[over].itertuples(index=False)]
    view = view.assign(_candidate=candidate)
    sign = 1.0 if higher_is_better(select_by) else -1.0
    chosen: list[Any] = []
    rows = []
    for _, group in view.groupby("group", sort=False):
        best, best_rank, parts = None, None, []
        for key, part in sorted(group.groupby("_candidate", sort=False),
                                key=lambda kv: sort_key(kv[1][over].iloc[0])):
            summary = stats.describe(part[select_by])
            parts.append((key, part, summary))
            rank = (sign * summary.mean, summary.n) if summary.n else None
            if rank is not None and (best_rank is None or rank > best_rank):
                best, best_rank = key, rank
        for key, part, summary in parts:
            first = part.iloc[0]
            rows.append({"task": first["task"], "label": first["label"], "group": first["group"],
                         **{c: first[c] for c in over}, "mean": summary.mean,
                         "std": summary.std, "n": summary.n, "chosen": key == best})
            if key == best:
                chosen.extend(part.index)
    return pd.Index(chosen), pd.DataFrame(rows)


# ---------------------------------------------------------------- statistics per group


def _seed_text(runs: pd.DataFrame) -> tuple[str, list[str]]:
    """'0 1 2' and the run dirs, ordered by seed (run dir order where there is no seed)."""
    seed = runs["config.seed"] if "config.seed" in runs else pd.Series(np.nan, runs.index)
    order = sorted(runs.index, key=lambda i: (is_missing(seed[i]), seed[i] if not
                                              is_missing(seed[i]) else 0, runs.at[i, "run_dir"]))
    seeds = " ".join(format_value(seed[i]) for i in order if not is_missing(seed[i]))
    return seeds, [runs.at[i, "run_dir"] for i in order]


def _group_row(runs: pd.DataFrame, metrics: list[str], select_by: str | None,
               over: list[str]) -> dict[str, Any]:
    first = runs.iloc[0]
    seeds, run_dirs = _seed_text(runs)
    row: dict[str, Any] = {"task": first["task"], "label": first["label"], "n": len(runs),
                           "seeds": seeds}
    row["selected"] = " ".join(f"{c.removeprefix(CONFIG_PREFIX).rsplit('.', 1)[-1]}="
                               f"{format_value(first[c])}" for c in over)
    if select_by is not None:
        row["selection_mean"] = stats.describe(runs[select_by]).mean
    for metric in metrics:
        summary = stats.describe(pd.to_numeric(runs[metric], errors="coerce"))
        row.update({f"{metric}_mean": summary.mean, f"{metric}_std": summary.std,
                    f"{metric}_ci": summary.ci, f"{metric}_n": summary.n})
    for column in BUDGET:
        row[column] = pd.to_numeric(runs[column], errors="coerce").mean()
    kinds = runs["peak_memory_kind"].dropna()
    row["peak_memory_kind"] = kinds.iloc[0] if len(kinds) else None
    row.update({"group": first["group"], "run_dirs": run_dirs})
    return row


def _baselines(table: pd.DataFrame, baseline: str) -> dict[int, int]:
    """Row -> its baseline row: a group whose label or attention is `baseline`, in the same task
    and agreeing on the most settings outside the attention (e.g. the same d_model)."""
    attention = table["group"].map(lambda g: config_of(g).get(ATTENTION_KEY))
    matches = table.index[(table["label"] == baseline) | (attention == baseline)]
    if matches.empty:
        raise ValueError(unknown_name_message(
            "--baseline", baseline, sorted({*table["label"], *attention.dropna()}) or ["(none)"]))
    out = {}
    for i in table.index:
        own = {k: v for k, v in config_of(table.at[i, "group"]).items()
               if not k.startswith(ATTENTION_KEY)}
        same_task = [j for j in matches if table.at[j, "task"] == table.at[i, "task"]]
        if i in same_task:
            out[i] = i
        elif same_task:
            out[i] = max(same_task, key=lambda j: sum(
                config_of(table.at[j, "group"]).get(k) == v for k, v in own.items()))
    return out


def _significance(table: pd.DataFrame, values: dict[str, pd.DataFrame], metrics: list[str],
                  baseline_of: dict[int, int], test: str) -> None:
    """`<metric>_{p,p_holm,stars}` against each row's baseline, Holm per task (in place)."""
    for metric in metrics:
        samples = {i: pd.to_numeric(values[table.at[i, "group"]][metric], errors="coerce")
                   for i in table.index}
        raw, adjusted = stats.against_baselines(samples, baseline_of, table["task"], test)
        table[f"{metric}_p"] = pd.Series(raw, dtype=float)
        table[f"{metric}_p_holm"] = pd.Series(adjusted, dtype=float)
        table[f"{metric}_stars"] = table[f"{metric}_p_holm"].map(stats.stars)



def analyze(df: pd.DataFrame, metrics: Sequence[str] | None = None, *,
            select_by: str | None = None, over: Sequence[str] = (), baseline: str | None = None,
            test: str = "welch") -> Analysis:
    """The comparison: groups, selection, mean/std/CI, significance, fairness flags.

    `over` keys are picked per group by the best mean of `select_by` (an eval/ metric;
    default the primary eval metric); the table then reports test/ metrics where runs have
    them. Raises ValueError (message names the valid choices) on a bad metric, key or baseline.
    """
    if test not in stats.TESTS:
        raise ValueError(unknown_name_message("--test", test, list(stats.TESTS)))
    over_columns = list(dict.fromkeys(resolve_key(df, k, "--over") for k in over))
    runs = add_groups(df, exclude=over_columns)
    runs["task"] = task_of(runs)
    done = runs[runs["status"] == "done"]
    if over_columns and select_by is None:
        select_by = next(iter(default_metrics(df)), None)
        if select_by is None:
            raise ValueError("--over needs an eval/ metric to select on; runs report none")
    if select_by is not None:
        check_selection_metric(df, select_by)
    reported = reported_metrics(df, metrics, selecting=select_by is not None)
    analysis = Analysis(pd.DataFrame(), reported, runs, select_by, over_columns, baseline, test)
    chosen = done.index
    if over_columns:
        chosen, analysis.candidates = select_hyperparameters(done, select_by, over_columns)
    picked = done.loc[chosen]
    values = {g: part for g, part in picked.groupby("group", sort=False)}
    rows = [_group_row(part, reported, select_by, over_columns) for part in values.values()]
    table = pd.DataFrame(rows)
    if table.empty:
        analysis.table = table
        return analysis
    table["run_index"] = [list(part.index) for part in values.values()]
    baseline_of = _baselines(table, baseline) if baseline is not None else None
    if baseline_of is not None:
        _significance(table, values, reported, baseline_of, test)
        table["baseline"] = [table.at[baseline_of[i], "label"] if i in baseline_of else None
                             for i in table.index]
        table["is_baseline"] = [baseline_of.get(i) == i for i in table.index]
    accuracy = accuracy_metric(reported)
    if accuracy is not None:  # the task's chance level, for the plots and the at-chance flag
        table["chance"] = [flags.chance_of(runs.loc[rows[0]]) for rows in table["run_index"]]
        table["chance"] = pd.to_numeric(table["chance"], errors="coerce")
    table["flags"] = flags.table_flags(table, runs, baseline_of, analysis.candidates,
                                       over_columns, accuracy)
    analysis.table = _sort(table, reported[0] if reported else None)
    if not analysis.candidates.empty:  # in the table's order
        rank = {g: i for i, g in enumerate(analysis.table["group"])}
        order = analysis.candidates["group"].map(rank).fillna(len(rank))
        analysis.candidates = analysis.candidates.iloc[np.argsort(order.to_numpy(),
                                                                  kind="stable")]
    analysis.notes = _notes(analysis)
    unselectable = sorted(set(done["label"]) - set(picked["label"]))
    if unselectable:
        analysis.notes.append(f"Left out, no run reports {select_by}: {', '.join(unselectable)}.")
    return analysis


def _cell_rank(table: pd.DataFrame) -> pd.Series:
    """Rank of each row's `cells`, so that variants run under the same settings sit together,
    in increasing order of the settings."""
    row_cells = cells(table)
    order = sorted(set(row_cells), key=lambda cell: [(k, *sort_key([v])) for k, v in cell])
    return row_cells.map({cell: rank for rank, cell in enumerate(order)})


def _sort(table: pd.DataFrame, primary: str | None) -> pd.DataFrame:
    """By task, then settings outside the attention, then the primary metric (best first)."""
    table = table.assign(_cell=_cell_rank(table))
    if primary is None:
        table = table.sort_values(["task", "_cell", "label"], ignore_index=True)
    else:
        table = table.sort_values(["task", "_cell", f"{primary}_mean", "label"],
                                  ascending=[True, True, not higher_is_better(primary), True],
                                  na_position="last", ignore_index=True)
    return table.drop(columns="_cell")


def _notes(analysis: Analysis) -> list[str]:
    notes = []
    eval_reported = [m for m in analysis.metrics if split_of(m) == "eval"]
    if analysis.select_by is not None and eval_reported:
        notes.append(f"No test metrics for {', '.join(eval_reported)}: validation metrics are "
                     "reported on the split used for selection, which is optimistic.")
    if analysis.baseline is not None and "is_baseline" in analysis.table:
        missing = sorted(set(analysis.table["task"]) - set(
            analysis.table.loc[analysis.table["is_baseline"], "task"]))
        if missing:
            notes.append(f"No baseline {analysis.baseline!r} in task(s) {', '.join(missing)}: "
                         "no significance tests there.")
    return notes


def accuracy_metric(metrics: Sequence[str]) -> str | None:
    """The first reported plain accuracy (`test/accuracy`, `eval/accuracy`): the metric that
    chance levels and the at-chance flag refer to."""
    return next((m for m in metrics if m.split("/", 1)[-1] == "accuracy"
                 and "_len" not in m.split("/", 1)[0]), None)


def summarize(df: pd.DataFrame, metrics: Sequence[str] | None = None, **options) -> pd.DataFrame:
    """`analyze(df, metrics, **options).table`: one row per reported group of done runs.

    Columns: task, label, n, seeds, selected, `<metric>_{mean,std,ci,n}` (std ddof=1, ci the
    95% t half-width; NaN for n=1), `BUDGET` means, peak_memory_kind, flags, group, run_dirs;
    with a baseline also `<metric>_{p,p_holm,stars}`, baseline and is_baseline.
    """
    return analyze(df, metrics, **options).table

