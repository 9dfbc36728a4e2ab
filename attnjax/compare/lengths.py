"""Length generalisation: the metric at other evaluation lengths (`eval_len<L>/...`).

    length_table(table, runs, metric)   -> mean/CI per group and evaluation length L
    plot_lengths(lengths, metric, path) -> metric vs L (log2), a panel per task and sweep cell,
                                           a line per variant (styles as in `plots`)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from attnjax import stats
from attnjax.compare import plots
from attnjax.compare.plots import (
    _cell_panels,
    _figure,
    error_bars,
    is_accuracy,
    shared_legend,
    style,
    wrap,
)


def length_table(table: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per group and evaluation length L, the mean/CI of `<split>_len<L>/<name>` over the
    group's reported runs (`run_index` into `runs`), for the split and name of `metric`."""
    prefix, name = metric.split("/", 1)
    split = prefix.split("_len", 1)[0]
    pattern = re.compile(rf"^{re.escape(split)}_len(\d+)/{re.escape(name)}$")
    columns = {int(m.group(1)): c for c in runs.columns if (m := pattern.match(c))}
    rows = []
    for _, row in table.iterrows():
        part = runs.loc[row["run_index"]]
        for length, column in sorted(columns.items()):
            summary = stats.describe(pd.to_numeric(part[column], errors="coerce"))
            if summary.n:
                rows.append({"task": row["task"], "label": row["label"], "group": row["group"],
                             "length": length, "mean": summary.mean, "ci": summary.ci,
                             "n": summary.n})
    return pd.DataFrame(rows, columns=["task", "label", "group", "length", "mean", "ci", "n"])


def plot_lengths(lengths: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """Metric vs evaluation length (log2), a panel per task and sweep cell, a line per variant."""
    if lengths.empty or lengths["length"].nunique() < 2:
        return None
    keys, titles, order, variant, names = _cell_panels(lengths)
    fig, axes = _figure(len(order))
    bounded = is_accuracy(metric)
    split, name = metric.split("/", 1)
    for ax, key in zip(axes, order, strict=False):
        for line, part in lengths[keys == key].groupby(variant[keys == key], sort=True):
            look = style(names.index(line))
            xs, means = part["length"].to_numpy(float), part["mean"].to_numpy(float)
            ax.plot(xs, means, label=line, **look)
            mask, err = error_bars(means, part["ci"], part["n"], bounded)
            if mask.any():
                ax.errorbar(xs[mask], means[mask], yerr=err, fmt="none", capsize=3,
                            ecolor=look["color"])
        ax.set_xscale("log", base=2)
        ax.set(xlabel="evaluation length L", ylabel=f"{name} ({split}_len<L>)")
        ax.set_title(wrap(titles[key] or metric))
        ax.grid(alpha=0.3)
    shared_legend(fig, axes)
    return plots._save(fig, path)
