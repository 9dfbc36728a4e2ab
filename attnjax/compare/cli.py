"""`attnjax compare`: the command line over the package (see `attnjax.compare`).

    write_report(paths, out_dir, ...)   -> (markdown, report.md path); also report.html,
                                           results.csv, runs.csv, PNGs (and results.tex)
    main(argv)                          -> exit code (2 for bad input)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from attnjax import stats
from attnjax.compare import plots, report
from attnjax.compare.groups import add_groups, task_of
from attnjax.compare.runs import load_runs
from attnjax.rundir import MANIFEST, read_manifest


def plot_curves(df: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """PNG of `metric` vs step per group of done runs of a `load_runs` frame (see
    `attnjax.compare.plots.plot_curves`)."""
    runs = add_groups(df[df["status"] == "done"])
    runs["task"] = task_of(runs)
    return plots.plot_curves(runs, metric, path)


def write_report(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                 metric: str | Sequence[str] | None = None, **options) -> tuple[str, Path]:
    """Writes report.md, report.html, results.csv, runs.csv and PNGs into `out_dir`.

    `metric` is the primary metric or a list (default: the eval/ or test/ metrics, accuracy
    first); `options` are those of `analyze` plus latex, heatmaps, x and by. Returns (markdown
    tables plus not-done runs, path of report.md).

    Raises:
      FileNotFoundError: a path is missing, or no run dirs were found under the paths.
      ValueError: a bad metric, key or baseline (the message names the valid ones).
    """
    paths = [os.fspath(p) for p in paths]
    study = study_settings(paths)
    options = {**study, **{k: v for k, v in options.items() if v not in (None, [], ())}}
    metric = metric or options.pop("metric", None)
    options.pop("metric", None)
    df = load_runs(paths)
    if df.empty and not report.has_benchmarks(paths):
        raise FileNotFoundError(_no_runs_message(paths))
    metrics = [metric] if isinstance(metric, str) else metric
    return report.write(df, paths, out_dir, metrics, **options)


def study_settings(paths: Sequence[str]) -> dict:
    """The compare settings a study declared (its experiment file's `compare()`, stored in
    manifest.json at plan time) when `paths` is one sweep dir; flags given by hand win."""
    if len(paths) != 1:
        return {}
    settings = read_manifest(paths[0]).get("compare") or {}
    return dict(settings) if isinstance(settings, dict) else {}


def _no_runs_message(paths: Sequence[str]) -> str:
    return f"no run directories (with summary.json or config.json) under: {', '.join(paths)}"


def default_out_dir(paths: Sequence[str]) -> str:
    """The first path when it is a sweep dir (has manifest.json), else ./compare_report."""
    first = paths[0]
    return first if os.path.isfile(os.path.join(first, MANIFEST)) else "compare_report"


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attnjax compare",
        description="Compare runs: mean ± std, 95% CI and significance over seeds, budgets, "
                    "fairness flags, plots; writes report.md/html and results.csv. "
                    "See docs/COMPARE.md.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run dirs or sweep dirs")
    parser.add_argument("--out", help="report dir (default: the sweep dir, or ./compare_report)")
    parser.add_argument("--metric", action="append", help="metric(s) to report, repeatable or "
                        "comma-separated; the first is primary (default: eval/ or test/ ones)")
    parser.add_argument("--select-by", help="validation metric that picks the --over values "
                        "per variant (default: the primary eval metric)")
    parser.add_argument("--over", action="append", help="config key(s) selected per variant, "
                        "e.g. learning_rate or model.d_model (repeatable or comma-separated)")
    parser.add_argument("--baseline", help="group label or attention name to test against")
    parser.add_argument("--test", choices=sorted(stats.TESTS), default="welch",
                        help="significance test against the baseline (Holm-corrected)")
    parser.add_argument("--latex", action="store_true", help="also write results.tex")
    parser.add_argument("--heatmaps", action="store_true",
                        help="attention heatmaps of each group's first finished run")
    parser.add_argument("--x", help="swept config key for the metric-vs-axis plot")
    parser.add_argument("--by", help="config key that splits that plot into panels")
    parser.add_argument("--series", action="append", help="config key(s) besides the variant "
                        "(model.attention) that make separate lines in that plot, e.g. "
                        "model.num_layers (repeatable or comma-separated; default: none)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad input: the message says why)."""
    args = _parse_args(argv)
    for path in args.dirs:
        if not os.path.isdir(path):
            print(f"error: no such directory: {path}", file=sys.stderr)
            return 2
    options = dict(select_by=args.select_by, over=_split_list(args.over),
                   baseline=args.baseline, test=args.test, latex=args.latex,
                   heatmaps=args.heatmaps, x=args.x, by=args.by,
                   series=_split_list(args.series))
    try:
        table, path = write_report(args.dirs, args.out or default_out_dir(args.dirs),
                                   _split_list(args.metric) or None, **options)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table)
    print(f"\nreport: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
