"""Text of the comparison tables: numbers, the long table, the pivoted main table, markdown.

    table_rows(part, metrics)         -> header and cells of one task's long table
    pivot_table(part, metric, axes)   -> the main table of a sweep: a row per variant, a column
                                         per cell of the swept axes, "mean ± CI (n)" cells
    markdown_table(table, runs=None)  -> one long table per task with its legend (+ not-done)
    not_done_markdown(runs)           -> running / failed / preempted / invalid runs, reasons
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from attnjax.compare.analysis import NOT_DONE_ORDER, accuracy_metric
from attnjax.compare.flags import CHANCE_MARGIN, PARAMS_TOLERANCE
from attnjax.compare.groups import (
    ATTENTION_KEY,
    add_groups,
    axis_columns,
    config_of,
    differing_labels,
    format_value,
    is_missing,
    short_names,
    sort_key,
)

MISSING = "—"

# ---------------------------------------------------------------- numbers


def _spec(x: float, digits: int = 3) -> str:
    """Fixed decimals for ordinary magnitudes, significant digits for tiny or huge ones."""
    fixed = x == 0 or 10 ** -(digits - 1) <= abs(x) < 1e5
    return f".{digits}f" if fixed else f".{digits}g"


def _number(x: Any, digits: int = 3) -> str:
    return MISSING if is_missing(x) else format(x, _spec(x, digits))


def format_stat(mean: float, std: float, star: str = "") -> str:
    """`0.912 ± 0.013**` (std in the mean's format), or just the mean for one seed."""
    if is_missing(mean):
        return MISSING
    spec = _spec(mean)
    text = format(mean, spec) if is_missing(std) else f"{mean:{spec}} ± {std:{spec}}"
    return text + (star or "")


def _ci(mean: float, half: float, bounded: bool = False) -> str:
    """'[low, high]'; `bounded` (an accuracy): clipped to [0, 1], as the plots are."""
    if is_missing(half) or is_missing(mean):
        return MISSING
    spec = _spec(mean)
    low, high = mean - half, mean + half
    if bounded:
        low, high = max(low, 0.0), min(high, 1.0)
    return f"[{low:{spec}}, {high:{spec}}]"


def is_accuracy(metric: str) -> bool:
    """Metrics bounded by [0, 1] whose intervals are clipped there."""
    return "accuracy" in metric.split("/")[-1]


def _si(x: Any) -> str:
    """1234 -> '1.23k', 2.5e9 -> '2.50G'."""
    if is_missing(x):
        return MISSING
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


MEMORY_MARKS = {"host_rss": ("†", "host RSS (whole process), not device memory"),
                "compiled": ("‡", "XLA's estimate for the compiled train step, not measured")}


def _bytes(x: Any, kind: Any = None) -> str:
    """Bytes in binary units; a mark when the number is not the device allocator's peak."""
    if is_missing(x):
        return MISSING
    mark = MEMORY_MARKS.get(kind, ("",))[0]
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if x >= scale:
            return f"{x / scale:.3g} {unit}{mark}"
    return f"{x:.0f} B{mark}"


def _p(p: float) -> str:
    return MISSING if is_missing(p) else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


# ---------------------------------------------------------------- tables


def _metrics_of(table: pd.DataFrame) -> list[str]:
    return [c.removesuffix("_mean") for c in table.columns if c.endswith("_mean")
            and c != "selection_mean"]


def _has(part: pd.DataFrame, column: str) -> bool:
    return column in part and part[column].notna().any()


def table_rows(part: pd.DataFrame, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of one task's rows (see docs/COMPARE.md for the columns)."""
    primary = metrics[0] if metrics else None
    throughput = "tokens_per_second" if _has(part, "tokens_per_second") else "steps_per_second"
    columns: list[tuple[str, Any]] = [("variant", lambda r: r["label"] + (
        " (baseline)" if r.get("is_baseline") is True else ""))]
    if _has(part, "selected") and (part["selected"] != "").any():
        columns.append(("selected", lambda r: r["selected"]))
    if _has(part, "selection_mean"):
        columns.append(("selection score (val)", lambda r: _number(r["selection_mean"])))
    for m in metrics:
        columns.append((m, lambda r, m=m: format_stat(r[f"{m}_mean"], r[f"{m}_std"],
                                                      r.get(f"{m}_stars", ""))))
    if primary:
        columns.append(("95% CI", lambda r: _ci(r[f"{primary}_mean"], r[f"{primary}_ci"],
                                                 is_accuracy(primary))))
    if primary and _has(part, f"{primary}_p_holm"):
        columns.append(("p (Holm)", lambda r: _p(r[f"{primary}_p_holm"])))
    columns.append(("n", lambda r: str(int(r["n"]))))
    optional = (("num_params", "params", lambda x: f"{x:,.0f}"),
                ("flops_per_token", "FLOPs/token", _si), ("state_size", "state", _si),
                (throughput, throughput.replace("_per_second", "/s"), _si))
    for column, name, fmt in optional:
        if _has(part, column):
            columns.append((name, lambda r, c=column, f=fmt: MISSING if is_missing(r[c])
                            else f(r[c])))
    if _has(part, "peak_memory_bytes"):
        columns.append(("peak mem", lambda r: _bytes(r["peak_memory_bytes"],
                                                     r.get("peak_memory_kind"))))
    if _has(part, "flags") and (part["flags"] != "").any():
        columns.append(("⚠", lambda r: r["flags"]))
    rows = [[str(get(row)) for _, get in columns] for _, row in part.iterrows()]
    return [name for name, _ in columns], rows


def legend(part: pd.DataFrame, metrics: list[str], test: str = "welch") -> str:
    """What the table's symbols mean, in one paragraph under it."""
    primary = metrics[0] if metrics else "the metric"
    clipped = ", clipped to [0, 1]" if is_accuracy(primary) else ""
    text = ["Cells: mean ± std over seeds (std with n−1)", f"95% CI: Student-t interval of "
            f"the mean of {primary} ({MISSING} for one seed{clipped})"]
    if _has(part, f"{primary}_p_holm"):
        name = "Welch's t-test" if test == "welch" else "bootstrap test"
        text.append(f"* p<0.05, ** p<0.01, *** p<0.001: two-sided {name} against the "
                    "baseline, Holm-corrected")
    chance = chance_text(part, metrics)
    if chance:
        text.append(chance)
    if _has(part, "flops_per_token"):
        text.append("FLOPs/token: analytic forward FLOPs")
    if _has(part, "state_size"):
        text.append("state: recurrent state floats per sequence")
    kinds = set(part["peak_memory_kind"].dropna()) if "peak_memory_kind" in part else set()
    text += [" ".join(mark) for kind, mark in MEMORY_MARKS.items() if kind in kinds]
    if _has(part, "flags") and (part["flags"] != "").any():
        text.append(FLAGS_LEGEND)
    return "; ".join(text) + "."


FLAGS_LEGEND = (f"⚠ params ±x%: parameter count more than {PARAMS_TOLERANCE:.0%} away (the LRA "
                "rule); k/N seeds: fewer finished seeds than launched or than other rows; grid "
                "edge: the best value is the smallest or largest tried; softmax in disguise: the "
                "variant's window, block, stride, k or landmarks cover the whole input length L, "
                "so it computes full softmax attention; at chance: mean accuracy ≤ chance + "
                f"max(95% CI half-width, {CHANCE_MARGIN})")


def chance_text(part: pd.DataFrame, metrics: list[str]) -> str:
    """'chance level of test/accuracy (the task's chance_accuracy): 0.125' or ''."""
    accuracy = accuracy_metric(metrics)
    if accuracy is None or not _has(part, "chance"):
        return ""
    levels = ", ".join(_number(c) for c in sorted(part["chance"].dropna().unique()))
    return (f"chance level of {accuracy} (the task's chance_accuracy; docs/COMPARE.md): "
            f"{levels}")


def markdown_grid(header: list[str], rows: list[list[str]]) -> str:
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, r)) + " |" for r in rows])


def swept_axes_of(part: pd.DataFrame) -> list[str]:
    """The pivot's columns: the study's axes among the rows of a task (`axis_columns`)."""
    return axis_columns([config_of(g) for g in part["group"]])


def _stat_cell(row: pd.Series, metric: str) -> str:
    """'0.912 ± 0.013 (3)': mean ± 95% CI half-width (n); no ± for one seed; ⚠ when flagged.
    An accuracy whose interval crosses 0 or 1 shows it clipped: '0.080 [0.000, 0.629] (2)'."""
    mean, half, n = row.get(f"{metric}_mean"), row.get(f"{metric}_ci"), row.get(f"{metric}_n")
    if is_missing(mean):
        return MISSING
    spec = _spec(mean)
    if is_missing(half):
        text = format(mean, spec)
    elif is_accuracy(metric) and (mean - half < 0 or mean + half > 1):
        text = f"{mean:{spec}} {_ci(mean, half, bounded=True)}"
    else:
        text = f"{mean:{spec}} ± {half:{spec}}"
    text += "" if is_missing(n) else f" ({int(n)})"
    return text + (row.get(f"{metric}_stars") or "") + (" ⚠" if row.get("flags") else "")


def pivot_table(part: pd.DataFrame, metric: str, axes: list[str]
                ) -> tuple[list[list[str]], list[list[str]], list[str]]:
    """One task's rows as a grid: a row per variant (its config outside `axes`), a column per
    combination of the `axes` values (sorted), cells `_stat_cell`.

    Returns (header levels — one list per axis, each starting with the variant column's
    heading — rows of text, notes naming each flagged cell's flags).
    """
    configs = {i: config_of(part.at[i, "group"]) for i in part.index}
    key = {i: tuple(format_value(configs[i].get(a)) for a in axes) for i in part.index}
    raw = {i: tuple(configs[i].get(a) for a in axes) for i in part.index}
    columns = sorted(set(key.values()), key=lambda k: sort_key(
        next(raw[i] for i in part.index if key[i] == k)))
    variant_of = {i: {c: v for c, v in configs[i].items() if c not in axes} for i in part.index}
    variant_key = {i: json_key(variant_of[i]) for i in part.index}
    names = variant_names({variant_key[i]: variant_of[i] for i in part.index})
    variants = list(dict.fromkeys(variant_key[i] for i in part.index))  # the table's order
    cell = {(variant_key[i], key[i]): i for i in part.index}
    axis_names = short_names(axes)
    levels = [[axis_names[a]] + [f"{axis_names[a]}={k[j]}" for k in columns]
              for j, a in enumerate(axes)]
    levels[-1][0] = "variant"
    rows, notes = [], []
    for variant in variants:
        text = [names[variant]]
        for column in columns:
            i = cell.get((variant, column))
            text.append(MISSING if i is None else _stat_cell(part.loc[i], metric))
            if i is not None and part.at[i, "flags"]:
                where = " ".join(f"{axis_names[a]}={v}" for a, v in zip(axes, column,
                                                                        strict=True))
                notes.append(f"{names[variant]} at {where}: {part.at[i, 'flags']}")
        rows.append(text)
    return levels, rows, notes


def json_key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def variant_names(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Short row names: the attention, plus (only where one attention has several rows) the
    settings that tell its rows apart, e.g. `local window_size=8`."""
    attention = {k: format_value(c.get(ATTENTION_KEY, "")) for k, c in configs.items()}
    names = {}
    for name in dict.fromkeys(attention.values()):
        same = {k: {c: v for c, v in configs[k].items() if c != ATTENTION_KEY}
                for k in configs if attention[k] == name}
        labels = differing_labels(same, empty="") if len(same) > 1 else {k: "" for k in same}
        names.update({k: " ".join(p for p in (name, labels[k]) if p) or "all runs"
                      for k in same})
    return names


def variant_settings(part: pd.DataFrame, axes: list[str]) -> list[str]:
    """Footnotes for the variant column: each variant's own settings (attention_kwargs), and
    the settings outside the attention that the study fixes per variant (not an axis, but
    different between variants: attention's positions or a short convolution)."""
    configs = [config_of(g) for g in part["group"]]
    fixed = [c for c in sorted({c for cf in configs for c in cf})
             if not c.startswith(ATTENTION_KEY) and c not in axes
             and len({format_value(cf.get(c)) for cf in configs}) > 1]
    out = {}
    for config in configs:
        name = format_value(config.get(ATTENTION_KEY, ""))
        own = {c: v for c, v in config.items() if c.startswith(ATTENTION_KEY + "_kwargs.")}
        own.update({c: config.get(c) for c in fixed})
        if own:
            text = " ".join(f"{c.rsplit('.', 1)[-1]}={format_value(v)}" for c, v in own.items())
            out.setdefault(f"{name}: {text}", None)
    return list(out)


def tasks_of(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(t, table[table["task"] == t]) for t in dict.fromkeys(table["task"])]


def markdown_table(table: pd.DataFrame, runs: pd.DataFrame | None = None,
                   metrics: list[str] | None = None, test: str = "welch") -> str:
    """Markdown table(s) of an `analyze` table, one per task when there are several, each
    followed by its legend; with `runs`, the runs left out (not done) follow."""
    metrics = metrics if metrics is not None else _metrics_of(table)
    tasks = tasks_of(table) if not table.empty else []
    parts = [] if tasks else ["No finished runs yet."]
    for task, part in tasks:
        grid = markdown_grid(*table_rows(part, metrics)) + "\n\n" + legend(part, metrics, test)
        parts.append(grid if len(tasks) == 1 else f"### Task: {task or 'unknown'}\n\n{grid}")
    if runs is not None and (runs["status"] != "done").any():
        parts.append(not_done_markdown(runs))
    return "\n\n".join(parts)


def not_done_items(runs: pd.DataFrame) -> list[tuple[str, list[str]]]:
    runs = runs if "label" in runs else add_groups(runs)
    out = []
    for status in NOT_DONE_ORDER:
        some = runs[runs["status"] == status]
        items = []
        for _, run in some.iterrows():
            step = "" if is_missing(run["step"]) else f"step {format_value(run['step'])}"
            where = ", ".join(p for p in (run["label"], step) if p)
            reason = "" if is_missing(run["reason"]) else f": {run['reason']}"
            items.append(f"`{run['run_dir']}`" + (f" ({where})" if where else "") + reason)
        if items:
            out.append((f"{status} ({len(items)})", items))
    return out


def not_done_markdown(runs: pd.DataFrame) -> str:
    """Sections listing running / failed / preempted / invalid runs with their reasons."""
    sections = ["## Runs not in the table"]
    for title, items in not_done_items(runs):
        sections.append(f"### {title}\n\n" + "\n".join(f"- {i}" for i in items))
    return "\n\n".join(sections)

