"""Compare runs: group seeds, select hyper-parameters on validation, test against a baseline.

    attnjax compare DIR [DIR ...] [--metric M] [--select-by eval/M --over KEY] [--baseline V]
                    [--test welch|bootstrap] [--latex] [--heatmaps] [--x KEY --by KEY]
                    [--series KEY] [--out D]

Imports flow one way, each module using only those above it:

    runs      reading run dirs: load_runs, find_run_dirs, read_curve (docs/RUN_DIR.md)
    groups    metric names, config keys, groups of seeds and their labels
    flags     fairness flags (budget, seeds, grid edge, softmax in disguise, at chance)
    analysis  analyze(...) -> Analysis: selection, statistics, significance, flags
    tables    text cells, the pivoted main table, markdown; latex: booktabs tables
    plots     figures (curves, bars, metric vs swept axis); lengths: metric vs eval length;
              figures: the report's figure sections (results, benchmarks, heatmaps)
    report    blocks -> report.md / report.html, results.csv, runs.csv
    cli       write_report(paths, out_dir, ...) and main(argv)

docs/COMPARE.md describes the report, its columns, the protocol and the statistics.
"""

from __future__ import annotations

from attnjax.compare.analysis import Analysis, analyze, select_hyperparameters, summarize
from attnjax.compare.cli import default_out_dir, main, plot_curves, write_report
from attnjax.compare.groups import add_groups, task_of
from attnjax.compare.runs import find_run_dirs, load_runs, read_curve
from attnjax.compare.tables import markdown_table, not_done_markdown, pivot_table

__all__ = [
    "Analysis",
    "add_groups",
    "analyze",
    "default_out_dir",
    "find_run_dirs",
    "load_runs",
    "main",
    "markdown_table",
    "not_done_markdown",
    "pivot_table",
    "plot_curves",
    "read_curve",
    "select_hyperparameters",
    "summarize",
    "task_of",
    "write_report",
]
