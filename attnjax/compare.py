"""Compare runs: group seeds, average final metrics, and write a table, a plot and a report.

    python -m attnjax.compare DIR [DIR ...] [--out OUT_DIR] [--metric eval/accuracy]

Runs are grouped by every config key except seeds and output/logging settings
(`attnjax.rundirs.NOT_GROUPED`); a group's label names the config values that differ between
groups (`attention=local window_size=8`). Only runs with status `done` are averaged; running,
failed, preempted and invalid runs are listed separately with their reasons.

    load_runs(paths)                 -> DataFrame, one row per run dir   (from attnjax.rundirs)
    add_groups(df)                   -> df with `group` and `label` columns (from attnjax.rundirs)
    summarize(df, metrics=None)      -> DataFrame, one row per group of done runs
    markdown_table(summary, runs=None) -> markdown (one table per task, then not-done runs)
    plot_curves(df, metric, path)    -> PNG of the metric vs step, mean over seeds per group
    write_report(paths, out_dir, metric=None) -> (markdown, report.md path)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnjax import rundir
from attnjax.rundirs import (
    CONFIG_PREFIX,
    INVALID,
    add_groups,
    format_value,
    is_missing,
    load_runs,
    read_curve,
    task_of,
)

__all__ = [
    "add_groups",
    "load_runs",
    "main",
    "markdown_table",
    "not_done_markdown",
    "plot_curves",
    "summarize",
    "write_report",
]

NOT_DONE_ORDER = ("running", "failed", "preempted", INVALID)
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "bpc", "bpd")
MISSING = "-"


# ---------------------------------------------------------------- summary


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics go up; loss, perplexity and error go down."""
    return not any(word in metric.lower() for word in LOWER_IS_BETTER)


def default_metrics(df: pd.DataFrame, primary: str | None = None) -> list[str]:
    """All `eval/*` final metrics of done runs, with `primary` (or eval/accuracy) first."""
    done = df[df["status"] == "done"]
    found = sorted(c for c in df.columns if c.startswith("eval/") and done[c].notna().any())
    first = primary or next((m for m in ("eval/accuracy", "eval/loss") if m in found), None)
    return ([first] if first else []) + [m for m in found if m != first]


def summarize(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per group of done runs; the first metric is the primary one (sort order).

    Columns: task, label, n, seeds, `<metric>_mean`, `<metric>_std` (ddof=1; NaN for n=1),
    num_params, steps_per_second, tokens_per_second (means), group.
    """
    metrics = list(metrics) if metrics is not None else default_metrics(df)
    done = add_groups(df[df["status"] == "done"])
    done["task"] = task_of(done)
    seed = done["config.seed"] if "config.seed" in done else pd.Series(np.nan, done.index)
    rows = []
    for group, runs in done.groupby("group", sort=False):
        row = {"task": runs["task"].iloc[0], "label": runs["label"].iloc[0], "n": len(runs)}
        row["seeds"] = " ".join(format_value(s) for s in sorted(seed[runs.index].dropna()))
        for metric in metrics:
            values = pd.to_numeric(runs.get(metric, pd.Series(dtype=float)), errors="coerce")
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1)
        for column in ("num_params", "steps_per_second", "tokens_per_second"):
            row[column] = pd.to_numeric(runs[column], errors="coerce").mean()
        rows.append({**row, "group": group})
    summary = pd.DataFrame(rows, columns=_summary_columns(metrics))
    return _sort_summary(summary, metrics[0] if metrics else None)


def _summary_columns(metrics: list[str]) -> list[str]:
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    tail = ["num_params", "steps_per_second", "tokens_per_second", "group"]
    return ["task", "label", "n", "seeds", *stats, *tail]


def _sort_summary(summary: pd.DataFrame, primary: str | None) -> pd.DataFrame:
    if primary is None or summary.empty:
        return summary.sort_values(["task", "label"], ignore_index=True)
    ascending = not higher_is_better(primary)
    return summary.sort_values(
        ["task", f"{primary}_mean", "label"],
        ascending=[True, ascending, True],
        na_position="last",
        ignore_index=True,
    )


# ---------------------------------------------------------------- markdown


def _spec(x: float, digits: int = 3) -> str:
    """Fixed decimals for ordinary magnitudes, significant digits for tiny or huge ones."""
    fixed = x == 0 or 10 ** -(digits - 1) <= abs(x) < 1e5
    return f".{digits}f" if fixed else f".{digits}g"


def _fmt_number(x: float, digits: int = 3) -> str:
    return MISSING if is_missing(x) else format(x, _spec(x, digits))


def _fmt_stat(mean: float, std: float) -> str:
    """`0.912 ± 0.013` (std in the mean's format), or just the mean for one seed."""
    if is_missing(mean):
        return MISSING
    spec = _spec(mean)
    return format(mean, spec) if is_missing(std) else f"{mean:{spec}} ± {std:{spec}}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(rows: pd.DataFrame, metrics: list[str]) -> str:
    header = ["variant", *metrics, "n", "params", "steps/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in rows.iterrows():
        cells = [_cell(row["label"])]
        cells += [_fmt_stat(row[f"{m}_mean"], row[f"{m}_std"]) for m in metrics]
        params = MISSING if is_missing(row["num_params"]) else f"{row['num_params']:,.0f}"
        cells += [str(row["n"]), params, _fmt_number(row["steps_per_second"], 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(summary: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """Markdown table(s) of a `summarize` result, one per task when there are several.

    Rows are groups sorted by the primary metric; metric cells read `mean ± std`. When the
    per-run `runs` frame is given, the runs left out (not done) follow in their own sections.
    """
    metrics = [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]
    tasks = list(dict.fromkeys(summary["task"]))
    if not tasks:
        parts = ["_No finished runs yet._"]
    elif len(tasks) == 1:
        parts = [_table(summary, metrics)]
    else:
        parts = [f"### Task: {t or 'unknown'}\n\n{_table(summary[summary['task'] == t], metrics)}"
                 for t in tasks]
    if runs is not None and (runs["status"] != "done").any():
        parts.append(not_done_markdown(runs))
    return "\n\n".join(parts)


def not_done_markdown(runs: pd.DataFrame) -> str:
    """Sections listing running / failed / preempted / invalid runs with their reasons."""
    runs = add_groups(runs)
    sections = ["## Runs not in the table"]
    for status in NOT_DONE_ORDER:
        some = runs[runs["status"] == status]
        if some.empty:
            continue
        lines = [f"### {status} ({len(some)})", ""]
        for _, run in some.iterrows():
            where = ", ".join(p for p in (run["label"], _step_text(run["step"])) if p)
            reason = "" if is_missing(run["reason"]) else f": {run['reason']}"
            lines.append(f"- `{run['run_dir']}` ({where}){reason}" if where else
                         f"- `{run['run_dir']}`{reason}")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def _step_text(step: Any) -> str:
    return "" if is_missing(step) else f"step {format_value(step)}"


# ---------------------------------------------------------------- plot and report


def _group_curve(run_dirs: Iterable[str], metric: str) -> pd.DataFrame | None:
    """Columns mean/min/max/n of the metric by step over the runs that logged it."""
    curves = [c for c in (read_curve(d, metric) for d in run_dirs) if not c.empty]
    if not curves:
        return None
    steps = pd.concat(curves, axis=1)
    return pd.DataFrame({"mean": steps.mean(axis=1), "min": steps.min(axis=1),
                         "max": steps.max(axis=1), "n": len(curves)})


def plot_curves(df: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """PNG of `metric` vs step: per group of done runs the mean over seeds, min-max shaded.

    One panel per task. Returns the path, or None (nothing written) when no run logged it.
    """
    from matplotlib.figure import Figure  # imported here: the table needs no matplotlib

    done = add_groups(df[df["status"] == "done"])
    done["task"] = task_of(done)
    tasks = sorted(done["task"].unique())
    fig = Figure(figsize=(6.4 * max(len(tasks), 1), 4.4), layout="constrained")
    axes = fig.subplots(1, max(len(tasks), 1), squeeze=False)[0]
    plotted = False
    for ax, task in zip(axes, tasks, strict=False):
        for label, runs in done[done["task"] == task].groupby("label", sort=True):
            curve = _group_curve(runs["run_dir"], metric)
            if curve is None:
                continue
            line = ax.plot(curve.index, curve["mean"], label=f"{label} (n={curve['n'].iloc[0]})")
            if curve["n"].iloc[0] > 1:
                ax.fill_between(curve.index, curve["min"], curve["max"], alpha=0.2,
                                color=line[0].get_color(), linewidth=0)
            plotted = True
        ax.set(xlabel="step", ylabel=metric, title=task or metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    if not plotted:
        return None
    path = Path(path)
    return rundir.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def _check_metric(df: pd.DataFrame, metric: str | None) -> None:
    known = sorted(c for c in df.columns if "/" in c and not c.startswith(CONFIG_PREFIX))
    if metric is not None and known and metric not in known:
        raise ValueError(f"unknown metric {metric!r}; runs report: {', '.join(known)}")


def _report_text(title: str, tables: str, png: Path | None, metric: str | None,
                 df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    count_text = ", ".join(f"{counts[s]} {s}" for s in ("done", *NOT_DONE_ORDER) if s in counts)
    parts = [f"# {title}", f"{len(df)} runs: {count_text}.", "## Results", tables]
    if png is not None:
        parts += ["## Curves", f"![{metric} vs step]({png.name})"]
    if (df["status"] != "done").any():
        parts.append(not_done_markdown(df))
    dirs = "\n".join(f"- `{r.run_dir}` ({r.status})" for r in df.itertuples())
    parts += ["## Run directories", dirs]
    return "\n\n".join(parts) + "\n"


def _write_report(df: pd.DataFrame, paths: Sequence[str], out_dir: str | os.PathLike,
                  metric: str | None = None) -> tuple[str, Path]:
    """`write_report` for already loaded runs."""
    _check_metric(df, metric)
    metrics = default_metrics(df, metric)
    summary = summarize(df, metrics)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    primary = metrics[0] if metrics else None
    png = None
    if primary is not None:
        png = plot_curves(df, primary, out / f"curves_{primary.replace('/', '_')}.png")
    tables = markdown_table(summary)
    runs = add_groups(df).drop(columns="group")
    runs.insert(2, "label", runs.pop("label"))
    rundir.atomic_write(out / "results.csv", lambda tmp: runs.to_csv(tmp, index=False))
    title = "Comparison of " + ", ".join(f"`{p}`" for p in paths)
    text = _report_text(title, tables, png, primary, df)
    report = rundir.atomic_write_text(out / "report.md", text)
    return markdown_table(summary, df), report


def write_report(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 metric: str | None = None) -> tuple[str, Path]:
    """Writes report.md, results.csv and the curves PNG into `out_dir` (each atomically).

    `metric` is the primary metric (sort order and plot); default eval/accuracy, else
    eval/loss. Returns (markdown tables plus not-done runs, path of report.md).

    Raises:
      FileNotFoundError: a path is missing, or no run dirs were found under the paths.
      ValueError: `metric` is not reported by any run.
    """
    paths = [os.fspath(p) for p in paths]
    df = load_runs(paths)
    if df.empty:
        raise FileNotFoundError(_no_runs_message(paths))
    return _write_report(df, paths, out_dir, metric)


# ---------------------------------------------------------------- CLI


def _no_runs_message(paths: Sequence[str]) -> str:
    return f"no run directories (with summary.json or config.json) under: {', '.join(paths)}"


def default_out_dir(paths: Sequence[str]) -> str:
    """The first path when it is a sweep dir (has manifest.json), else ./compare_report."""
    first = paths[0]
    return first if os.path.isfile(os.path.join(first, "manifest.json")) else "compare_report"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m attnjax.compare",
        description="Compare finished runs: mean ± std over seeds, curves, report.md.",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run dirs or sweep dirs")
    parser.add_argument("--out", help="report dir (default: the sweep dir, or ./compare_report)")
    parser.add_argument("--metric", help="primary metric (default: eval/accuracy)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for a missing dir or no runs)."""
    args = _parse_args(argv)
    for path in args.dirs:
        if not os.path.isdir(path):
            print(f"error: no such directory: {path}", file=sys.stderr)
            return 2
    df = load_runs(args.dirs)
    if df.empty:
        print(f"error: {_no_runs_message(args.dirs)}", file=sys.stderr)
        return 2
    try:
        table, report = _write_report(df, args.dirs, args.out or default_out_dir(args.dirs),
                                      args.metric)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
