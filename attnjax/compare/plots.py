"""Comparison plots (matplotlib, Agg canvas, PNG); each returns its path, or None if empty.

    plot_curves(runs, metric, path)          metric vs step: mean over seeds, min-max band
    plot_bars(table, metric, path)           final metric per group, 95% t-CI error bars
    plot_swept(table, metric, x, by, path, series=())
                                             metric vs a swept config key, a line per variant
                                             (and `series` key), a panel per `by` value
                                             (Zoology, Arora et al. 2023, figure 2)

Length generalisation (metric vs evaluation length) is in `attnjax.compare.lengths`.

`table` is `attnjax.compare.analyze(...).table` (one row per group, `group` holds its config as
JSON; `chance` the task's chance accuracy where known); `runs` is the per-run frame with `task`
and `label`. Every figure: one legend for all panels, outside the axes on the right; wrapped
titles; colours cycled with markers and line styles past 10 series; CI bars only where n >= 2,
clipped to [0, 1] for accuracies; the chance level a dashed line labelled "chance". Files are
written atomically.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnjax import rundir
from attnjax.compare.groups import (
    ATTENTION_KEY,
    cells,
    config_of,
    differing_labels,
    is_missing,
    sort_key,
)
from attnjax.compare.runs import CONFIG_PREFIX, read_curve
from attnjax.compare.tables import is_accuracy, variant_names

DPI = 110
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
          "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")  # 7 is prime to 10: (colour, marker) pairs differ
LINESTYLES = ("-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)))
CHANCE_STYLE = {"color": "black", "linestyle": (0, (5, 3)), "linewidth": 1.2, "alpha": 0.8}


def style(i: int) -> dict[str, Any]:
    """Line style of series i: 10 colours, then the next line style; markers cycle by 7."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)]}


def _figure(panels: int, *, width: float = 5.0, height: float = 3.8, max_columns: int = 3):
    """A Figure on an Agg canvas (no pyplot, no display) with `panels` axes in a grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = max(1, min(panels, max_columns))
    rows = max(1, math.ceil(panels / columns))
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig, path: str | os.PathLike) -> Path:
    return rundir.atomic_write(Path(path), lambda tmp: fig.savefig(
        tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1))


def wrap(text: str, width: int = 48) -> str:
    """A title or label broken into lines of at most `width` characters."""
    return "\n".join(textwrap.wrap(str(text), width, break_on_hyphens=False)) or str(text)


def shared_legend(fig, axes, title: str | None = None) -> None:
    """One legend for every panel, outside the axes to the right (the figure grows to fit);
    labels are unique across panels (the first handle of a label is shown)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if not handles:
        return
    labels = [wrap(label, 40) for label in handles]
    columns = math.ceil(len(labels) / 28)
    longest = max(len(line) for label in labels for line in label.split("\n"))
    fig.set_figwidth(fig.get_figwidth() + columns * (0.075 * longest + 0.7))
    lines = sum(label.count("\n") + 1 for label in labels) / columns
    fig.set_figheight(max(fig.get_figheight(), 0.2 * lines + 1.0))
    fig.legend(list(handles.values()), labels, loc="outside right upper", fontsize="small",
               ncols=columns, title=title, title_fontsize="small", frameon=False)


def error_bars(mean: np.ndarray, ci: np.ndarray, n: np.ndarray,
               bounded: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mask, [2, k] lower/upper error lengths) of the points with n >= 2 and a CI; with
    `bounded` (an accuracy) the interval is clipped to [0, 1]."""
    mean, ci, n = (np.asarray(a, dtype=float) for a in (mean, ci, n))
    mask = (n >= 2) & np.isfinite(ci) & np.isfinite(mean)
    low, high = mean[mask] - ci[mask], mean[mask] + ci[mask]
    if bounded:
        low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
    return mask, np.stack([mean[mask] - low, high - mean[mask]])


def ci_caption(metric: str, n: Sequence[Any]) -> str:
    """What the error bars are, honestly: none when no group has two seeds."""
    counts = pd.to_numeric(pd.Series(list(n)), errors="coerce")
    if not (counts >= 2).any():
        return "one seed per point: no confidence intervals"
    text = "bars: 95% t-CI of the mean (points with n ≥ 2 seeds only)"
    return text + (", clipped to [0, 1]" if is_accuracy(metric) else "")


def _chance_line(ax, levels: Sequence[float], vertical: bool = False) -> None:
    """Dashed line(s) at the chance level(s), labelled "chance"."""
    for k, level in enumerate(sorted({float(v) for v in levels if not is_missing(v)})):
        line = ax.axvline if vertical else ax.axhline
        line(level, label="chance" if k == 0 else None, **CHANCE_STYLE)


def _chance_levels(table: pd.DataFrame, mask: Any = None) -> list[float]:
    if "chance" not in table:
        return []
    values = table["chance"] if mask is None else table.loc[mask, "chance"]
    return sorted(set(values.dropna()))


# ---------------------------------------------------------------- curves and bars


def _group_curve(run_dirs: list[str], metric: str) -> pd.DataFrame | None:
    """Columns mean/min/max/n of the metric by step over the runs that logged it."""
    curves = [c for c in (read_curve(d, metric) for d in run_dirs) if not c.empty]
    if not curves:
        return None
    steps = pd.concat(curves, axis=1)
    return pd.DataFrame({"mean": steps.mean(axis=1), "min": steps.min(axis=1),
                         "max": steps.max(axis=1), "n": len(curves)})


def _panels(frame: pd.DataFrame) -> tuple[pd.Series, dict[str, str]]:
    """Each row's panel: its task and settings outside the attention (a cell of the sweep),
    and panel titles naming only the settings that differ between panels."""
    row_cells = cells(frame).map(dict)
    keys = frame["task"].astype(str) + "|" + row_cells.map(
        lambda c: json.dumps(c, sort_keys=True, default=str))
    first = {k: (task, cell) for k, task, cell in zip(keys, frame["task"], row_cells,
                                                      strict=True)}
    labels = differing_labels({k: v[1] for k, v in first.items()}, empty="")
    return keys, {k: " ".join(p for p in (str(first[k][0]), labels[k]) if p) for k in first}


def _cell_panels(frame: pd.DataFrame):
    """(panel key per row, titles, panels in order, variant name per row, variant names):
    a panel per task and sweep cell, a line per variant (attention and its settings)."""
    keys, titles = _panels(frame)
    order = sorted(titles, key=lambda k: (k.split("|", 1)[0], sort_key(
        json.loads(k.split("|", 1)[1]).values())))
    own = frame["group"].map(lambda g: json.dumps(
        {c: v for c, v in config_of(g).items() if c.startswith(ATTENTION_KEY)}, sort_keys=True))
    variant = own.map(variant_names({k: json.loads(k) for k in own.unique()}))
    return keys, titles, order, variant, sorted(variant.unique())


def plot_curves(runs: pd.DataFrame, metric: str, path: str | os.PathLike,
                chance: dict[str, list[float]] | None = None) -> Path | None:
    """`metric` vs step, a panel per task and sweep cell (settings outside the attention), a
    line per variant (mean over seeds, min-max shaded); `chance` maps a task to its chance
    level(s), drawn dashed.

    Reads metrics.jsonl of every run in `runs` (done runs with `task`, `group` and `label`).
    """
    keys, titles, order, variant, names = _cell_panels(runs)
    fig, axes = _figure(len(order))
    plotted = False
    for ax, key in zip(axes, order, strict=False):
        part = runs[keys == key]
        for name, lines in part.groupby(variant[keys == key], sort=True):
            curve = _group_curve(list(lines["run_dir"]), metric)
            if curve is not None:
                look = {**style(names.index(name)), "marker": None}
                ax.plot(curve.index, curve["mean"], label=name, **look)
                if int(curve["n"].iloc[0]) > 1:
                    ax.fill_between(curve.index, curve["min"], curve["max"], alpha=0.15,
                                    color=look["color"], linewidth=0)
                plotted = True
        task = key.split("|", 1)[0]
        if chance and is_accuracy(metric):
            _chance_line(ax, chance.get(task, []))
        ax.set(xlabel="step", ylabel=metric)
        ax.set_title(wrap(titles[key] or metric))
        ax.grid(alpha=0.3)
    shared_legend(fig, axes)
    return _save(fig, path) if plotted else None


def short_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Legend and axis labels: the variant's short name (`variant_names`: the attention, its
    settings only where one attention has several) and the other settings that differ."""
    own = {k: {c: v for c, v in cf.items() if c.startswith(ATTENTION_KEY)}
           for k, cf in configs.items()}
    names = variant_names(own)
    rest = differing_labels({k: {c: v for c, v in cf.items() if not c.startswith(ATTENTION_KEY)}
                             for k, cf in configs.items()}, empty="")
    return {k: " ".join(p for p in (names[k], rest[k]) if p) for k in configs}


def plot_bars(table: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """Mean `metric` per group (horizontal bars, labels wrapped) with 95% t-CI error bars where
    n >= 2 (clipped to [0, 1] for accuracies); baseline hatched; chance a dashed line."""
    if f"{metric}_mean" not in table or table[f"{metric}_mean"].isna().all():
        return None
    tasks = sorted(table["task"].unique())
    names = short_labels({i: config_of(g) for i, g in zip(table.index, table["group"],
                                                            strict=True)})
    text = {i: wrap(f"{names[i]} (n={n})", 44) for i, n in zip(table.index, table["n"],
                                                                 strict=True)}
    tallest = max(sum(text[i].count("\n") + 1 for i in table.index[table["task"] == task])
                  for task in tasks)  # label lines, not bars: wrapped labels must not touch
    fig, axes = _figure(len(tasks), width=6.5, height=max(2.5, 0.24 * tallest + 1.4),
                        max_columns=2)
    bounded = is_accuracy(metric)
    for ax, task in zip(axes, tasks, strict=False):
        part = table[table["task"] == task].iloc[::-1]
        y = np.arange(len(part))
        means = part[f"{metric}_mean"].to_numpy(dtype=float)
        bars = ax.barh(y, np.nan_to_num(means), color="tab:blue", alpha=0.8)
        mask, err = error_bars(means, part[f"{metric}_ci"], part["n"], bounded)
        if mask.any():
            ax.errorbar(means[mask], y[mask], xerr=err, fmt="none", ecolor="black",
                        capsize=3, label="95% CI (n ≥ 2)")
        if "is_baseline" in part:
            for bar, is_base in zip(bars, part["is_baseline"], strict=True):
                if is_base:
                    bar.set(hatch="//", color="tab:gray")
        ax.set_yticks(y, [text[i] for i in part.index], fontsize="small")
        if bounded:
            _chance_line(ax, _chance_levels(part), vertical=True)
        ax.set(xlabel=metric)
        ax.set_title(wrap(task or metric))
        ax.grid(alpha=0.3, axis="x")
    shared_legend(fig, axes)
    return _save(fig, path)


# ---------------------------------------------------------------- metric vs a swept axis


def _log_scale(values: pd.Series) -> bool:
    positive = values[values > 0]
    return len(positive) == len(values) and len(values) > 1 and positive.max() / positive.min() >= 8


def series_columns(configs: pd.Series, x: str, by: str | None, panel: pd.Series,
                   series: Sequence[str] = ()) -> list[str]:
    """The config columns that make separate lines: the variant (`model.attention` and its
    attention_kwargs), the declared `series`, and any other key that takes two values at the
    same (panel, x, line) — settings that co-vary with x (mlp_dim = 4·d_model) do not split."""
    keys = list(dict.fromkeys([*series]))
    columns = sorted({c for config in configs for c in config} - {x, by} - set(keys))
    variant = [c for c in columns if c.startswith(ATTENTION_KEY)]
    keys = [*variant, *keys]
    rest = [c for c in columns if c not in keys]
    while True:
        line = configs.map(lambda c: json.dumps([c.get(k) for k in keys], default=str))
        where = panel.astype(str) + "|" + configs.map(lambda c: json.dumps(c.get(x))) + "|" + line
        split = [c for c in rest if configs.map(lambda cf, c=c: json.dumps(
            cf.get(c), default=str)).groupby(where).nunique().max() > 1]
        if not split:
            return keys
        keys.append(split[0])
        rest.remove(split[0])


def plot_swept(table: pd.DataFrame, metric: str, x: str, by: str | None,
               path: str | os.PathLike, series: Sequence[str] = ()) -> Path | None:
    """Mean `metric` vs config column `x` (95% CI bars where n >= 2), a line per variant and
    `series` value (`series_columns`), a panel per task and `by` value; chance dashed.
    Nothing is drawn when `x` takes fewer than two values."""
    if f"{metric}_mean" not in table:
        return None
    configs = table["group"].map(config_of)
    frame = table.assign(_x=configs.map(lambda c: c.get(x)),
                         _by=configs.map(lambda c: c.get(by) if by else None))
    keep = frame["_x"].map(lambda v: isinstance(v, int | float) and not is_missing(v))
    frame, configs = frame[keep], configs[keep]
    if frame["_x"].nunique() < 2:
        return None
    panel = frame["task"].astype(str) + "|" + frame["_by"].map(str)
    keys = series_columns(configs, x, by, panel, series)
    frame = frame.assign(_line=configs.map(lambda c: json.dumps(
        {k: c[k] for k in keys if k in c}, sort_keys=True, default=str)))
    lines = sorted(frame["_line"].unique())
    labels = short_labels({k: json.loads(k) for k in lines})
    look = {line: style(i) for i, line in enumerate(lines)}
    panels = sorted(frame.groupby(["task", frame["_by"].map(str)], sort=False),
                    key=lambda kv: (kv[0][0], sort_key([kv[1]["_by"].iloc[0]])))
    fig, axes = _figure(len(panels))
    x_name, by_name = x.removeprefix(CONFIG_PREFIX), (by or "").removeprefix(CONFIG_PREFIX)
    bounded = is_accuracy(metric)
    for ax, ((task, by_value), part) in zip(axes, panels, strict=False):
        for line, points in part.groupby("_line", sort=True):
            points = points.sort_values("_x")
            xs, means = points["_x"].to_numpy(float), points[f"{metric}_mean"].to_numpy(float)
            ax.plot(xs, means, label=labels[line], **look[line])
            mask, err = error_bars(means, points[f"{metric}_ci"], points["n"], bounded)
            if mask.any():
                ax.errorbar(xs[mask], means[mask], yerr=err, fmt="none", capsize=3,
                            ecolor=look[line]["color"])
        if bounded:
            _chance_line(ax, _chance_levels(part))
        if _log_scale(part["_x"].astype(float)):
            ax.set_xscale("log", base=2)
        title = " ".join(p for p in (task, f"{by_name}={by_value}" if by else "") if p)
        ax.set(xlabel=x_name, ylabel=metric)
        ax.set_title(wrap(title or metric))
        ax.grid(alpha=0.3)
    shared_legend(fig, axes)
    return _save(fig, path)
