"""The report's figure sections: results, benchmarks (`attnjax bench`), attention heatmaps.

    swept_axes(analysis, x, by)       -> config columns for the metric-vs-axis plot
    series_keys(analysis, series)     -> the declared series keys as config columns
    load_benchmarks(paths)            -> rows of every benchmark.json found, and unreadable files
    plot_benchmarks(rows, path)       -> tokens/s and peak memory vs sequence length, log-log
    figure_blocks(analysis, paths, out, ...) -> every figure section as report blocks
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from attnjax.compare import lengths as lengths_
from attnjax.compare import plots
from attnjax.compare.groups import format_value, resolve_key, swept_keys
from attnjax.compare.runs import CONFIG_PREFIX, as_float, find_benchmarks, read_json

BENCHMARK_COLUMNS = ("attention", "seq_len", "batch_size", "d_model", "num_heads", "causal",
                     "ms_per_step", "tokens_per_second", "peak_memory_bytes",
                     "compiled_temp_bytes", "status", "reason")


def load_benchmarks(paths: Iterable[str | os.PathLike]) -> tuple[pd.DataFrame, list[str]]:
    """Rows of every attention benchmark.json under `paths`, and the files that could not be
    read (each with its reason).

    Columns: `BENCHMARK_COLUMNS` plus `source` (the file) and `device`.
    """
    rows, problems = [], []
    for path in find_benchmarks(paths):
        data, error = read_json(path)
        if error is None and not (isinstance(data, dict) and isinstance(data.get("rows"), list)):
            error = "not a benchmark object with a `rows` list"
        if error is not None:
            problems.append(f"{path}: {error}")
            continue
        if data.get("kind", "attention") != "attention":
            continue
        for row in data["rows"]:
            if isinstance(row, dict):
                rows.append({**{c: row.get(c) for c in BENCHMARK_COLUMNS}, "source": path,
                             "device": str(data.get("device") or "")})
    frame = pd.DataFrame(rows, columns=[*BENCHMARK_COLUMNS, "source", "device"])
    for column in ("seq_len", "ms_per_step", "tokens_per_second", "peak_memory_bytes"):
        frame[column] = frame[column].map(as_float)
    return frame, problems


def _bench_labels(rows: pd.DataFrame) -> pd.Series:
    """`attention` plus the benchmark settings that vary (batch_size, d_model, ...)."""
    varying = [c for c in ("batch_size", "d_model", "num_heads", "causal")
               if rows[c].map(str).nunique() > 1]
    return rows.apply(lambda r: " ".join([str(r["attention"])] + [f"{c}={r[c]}"
                                                                   for c in varying]), axis=1)


def plot_benchmarks(rows: pd.DataFrame, path: str | os.PathLike) -> Path | None:
    """Tokens/s and peak memory vs sequence length per attention (log-log) for `ok` rows of
    one benchmark.json (see `load_benchmarks`)."""
    ok = rows[rows["status"] == "ok"].copy()
    if ok.empty:
        return None
    ok["_label"] = _bench_labels(ok)
    device = next((d for d in rows["device"] if d), "")
    fig, axes = plots._figure(2)
    for ax, column, ylabel in ((axes[0], "tokens_per_second", "tokens / s"),
                               (axes[1], "peak_memory_bytes", "peak memory (bytes)")):
        for k, (label, part) in enumerate(ok.groupby("_label", sort=True)):
            part = part.dropna(subset=[column]).sort_values("seq_len")
            part = part[part[column] > 0]
            if not part.empty:
                ax.plot(part["seq_len"], part[column], label=label, **plots.style(k))
        ax.set_xscale("log", base=2)
        if ax.has_data():
            ax.set_yscale("log")
        ax.set(xlabel="sequence length", ylabel=ylabel)
        ax.set_title(plots.wrap(f"{ylabel} {device}".strip()))
        ax.grid(alpha=0.3, which="both")
    plots.shared_legend(fig, axes)
    return plots._save(fig, path)


# ---------------------------------------------------------------- report sections

AXIS_PREFERENCE = ("model.d_model", "model.num_layers", "model.num_heads", "task.seq_len",
                   "model.mlp_dim", "task.num_kv_pairs", "task.vocab_size")


def swept_axes(analysis, x: str | None = None, by: str | None = None) -> tuple[str | None,
                                                                               str | None]:
    """Config columns for the metric-vs-axis plot: `x` and `by` as given (short keys allowed),
    else a numeric swept key (d_model first) and, for panels, task.seq_len when also swept.

    Raises ValueError (naming the swept keys) for a key that is not in the config.
    """
    runs = analysis.runs
    done = runs[runs["status"] == "done"]
    x = resolve_key(runs, x, "--x") if x else None
    by = resolve_key(runs, by, "--by") if by else None
    if x is None:
        swept = [c for c in swept_keys(done, analysis.over)
                 if not c.startswith(f"{CONFIG_PREFIX}model.attention") and c != by
                 and pd.to_numeric(done[c], errors="coerce").notna().all()]
        ranked = sorted(swept, key=lambda c: (AXIS_PREFERENCE.index(c.removeprefix(
            CONFIG_PREFIX)) if c.removeprefix(CONFIG_PREFIX) in AXIS_PREFERENCE else 99, c))
        x = ranked[0] if ranked else None
        if by is None and x is not None:
            by = next((c for c in ranked[1:] if c == f"{CONFIG_PREFIX}task.seq_len"), None)
    return x, by


def _eval_name(metric: str) -> str:
    prefix, name = metric.split("/", 1)
    return f"eval{prefix.removeprefix('test')}/{name}" if prefix.startswith("test") else metric


def _runs_of(analysis) -> pd.DataFrame:
    index = [i for rows in analysis.table["run_index"] for i in rows]
    return analysis.runs.loc[index]


def series_keys(analysis, series: Sequence[str] = ()) -> list[str]:
    """`--series` keys as config columns (short keys allowed; ValueError names the swept keys)."""
    return list(dict.fromkeys(resolve_key(analysis.runs, key, "--series") for key in series))


def result_figures(analysis, out: Path, x: str | None = None, by: str | None = None,
                   series: Sequence[str] = ()) -> list[tuple]:
    """Learning curves, bars, metric vs swept axis and vs evaluation length, as report blocks;
    each caption says what its error bars are and names the chance line."""
    if analysis is None or analysis.table.empty or not analysis.metrics:
        return []
    table, metric = analysis.table, analysis.metrics[0]
    slug = lambda m: m.replace("/", "_")
    chance = {t: plots._chance_levels(part) for t, part in table.groupby("task")}
    drawn = plots.is_accuracy(metric) and any(chance.values())
    chance_note = ("; dashed: the task's chance accuracy (`chance_accuracy`, docs/COMPARE.md)"
                   if drawn else "")
    blocks: list[tuple] = []
    curve = _eval_name(metric)
    path = plots.plot_curves(_runs_of(analysis), curve, out / f"curves_{slug(curve)}.png",
                             chance)
    if path:
        blocks.append(("img", path, f"{curve} vs step (mean over seeds, band: min–max)"
                       + (chance_note if plots.is_accuracy(curve) else "")))
    ci = plots.ci_caption(metric, table["n"])
    path = plots.plot_bars(table, metric, out / f"bars_{slug(metric)}.png")
    if path:
        blocks.append(("img", path, f"{metric}: mean over seeds; {ci}{chance_note}"))
    x, by = swept_axes(analysis, x, by)
    if x is not None:
        path = plots.plot_swept(table, metric, x, by, out / f"swept_{slug(metric)}.png",
                                series_keys(analysis, series))
        if path:
            blocks.append(("img", path, f"{metric} vs {x.removeprefix(CONFIG_PREFIX)}"
                           + (f" by {by.removeprefix(CONFIG_PREFIX)}" if by else "")
                           + f"; a line per variant; {ci}{chance_note}"))
    lengths = lengths_.length_table(table, analysis.runs, metric)
    path = lengths_.plot_lengths(lengths, metric, out / f"lengths_{slug(metric)}.png")
    if path:
        blocks.append(("img", path, f"{metric} vs evaluation length; "
                       + plots.ci_caption(metric, lengths["n"])))
    return [("h", 2, "Figures"), *blocks] if blocks else []


def benchmark_blocks(paths, out: Path) -> list[tuple]:
    """Speed and memory vs sequence length for every benchmark.json under `paths`."""
    rows, problems = load_benchmarks(paths)
    if rows.empty and not problems:
        return []
    blocks: list[tuple] = [("h", 2, "Benchmarks")]
    for i, (source, part) in enumerate(rows.groupby("source", sort=True)):
        path = plot_benchmarks(part, out / f"benchmark_{i}.png")
        blocks.append(("p", f"`{source}` ({next((d for d in part['device'] if d), '?')})"))
        if path:
            blocks.append(("img", path, "tokens/s and peak memory vs sequence length"))
        bad = [f"{r.attention} L={format_value(r.seq_len)}: {r.status}"
               + (f" ({r.reason})" if r.reason else "") for r in part.itertuples()
               if r.status != "ok"]
        if bad:
            blocks.append(("list", bad))
    if problems:
        blocks += [("p", "Unreadable benchmark files:"), ("list", problems)]
    return blocks


def heatmap_blocks(analysis, out: Path) -> list[tuple]:
    """Attention heatmaps of each row's first finished run (lowest seed), example 0.

    Calls `attnjax.heatmaps.render(run_dir, out_dir, example=0)`; variants without explicit
    weights, and renders that fail, are listed instead of crashing the report.
    """
    if analysis is None or analysis.table.empty:
        return []
    blocks: list[tuple] = [("h", 2, "Attention heatmaps")]
    try:
        from attnjax import heatmaps  # imported here: it needs jax
    except ImportError as e:
        return [*blocks, ("p", f"Not drawn: attnjax.heatmaps is unavailable ({e}).")]
    without = []
    for _, row in analysis.table.iterrows():
        run_dir = row["run_dirs"][0]
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{row['task']} {row['label']}").strip("-")
        try:
            result = heatmaps.render(run_dir, out / "heatmaps" / slug, example=0)
        except Exception as e:  # a report lists what it could not draw
            without.append(f"{row['label']}: heatmaps failed for `{run_dir}`: "
                           f"{type(e).__name__}: {e}")
            continue
        if result.get("skipped") or not result.get("images"):
            without.append(f"{row['label']} ({result.get('attention')}): no explicit attention "
                           f"weights: {result.get('skipped') or 'nothing rendered'}")
            continue
        blocks.append(("h", 3, f"{row['label']} (`{run_dir}`, example 0)"))
        blocks += [("img", Path(p), f"{row['label']}: {Path(p).stem}")
                   for p in result["images"]]
    if without:
        blocks += [("p", "Not drawn:"), ("list", without)]
    return blocks


def figure_blocks(analysis, paths, out: Path, *, x: str | None = None, by: str | None = None,
                  series: Sequence[str] = (), heatmaps: bool = False) -> list[tuple]:
    """Every figure section of the report (analysis may be None when there are no runs)."""
    blocks = result_figures(analysis, out, x, by, series) + benchmark_blocks(paths, out)
    return blocks + (heatmap_blocks(analysis, out) if heatmaps else [])
