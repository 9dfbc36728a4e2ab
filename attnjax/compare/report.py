"""The comparison report: report.md, a self-contained report.html, results.csv and runs.csv.

    to_markdown(blocks, base), to_html(blocks, title) -> the two renderings of a block list
    protocol(analysis)                 -> the protocol in words, one paragraph per step
    write(df, paths, out_dir, ...)     -> writes everything; returns (markdown, report.md path)

A report is a list of blocks (heading, paragraph, table, image, list) rendered twice: to
markdown (PNGs linked beside it) and to HTML with every PNG embedded as a base64 data URI, so
report.html is one file that can be mailed or attached to a review. A table block's header is
one row of names or a list of rows (a multi-level header: HTML merges equal neighbours, markdown
joins each column's levels). When a task's rows differ in settings outside the attention (a
sweep), its main table is pivoted (`tables.pivot_table`) and the long table is an appendix.
docs/COMPARE.md explains every column.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from attnjax import rundir
from attnjax.compare import figures, tables
from attnjax.compare.analysis import NOT_DONE_ORDER, Analysis, accuracy_metric, analyze
from attnjax.compare.flags import CHANCE_MARGIN, PARAMS_TOLERANCE
from attnjax.compare.groups import format_value, higher_is_better
from attnjax.compare.latex import latex_tables
from attnjax.compare.provenance import provenance_blocks
from attnjax.compare.runs import CONFIG_PREFIX
from attnjax.compare.tables import format_stat, legend, table_rows

# ---------------------------------------------------------------- blocks -> md / html


def _inline_html(text: str) -> str:
    text = html.escape(str(text))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def to_markdown(blocks: list[tuple], base: Path) -> str:
    """Markdown with images linked relative to `base` (the report's folder)."""
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            out.append(tables.markdown_grid(_header_names(block[1]), block[2]))
        elif kind == "img":
            link = Path(os.path.relpath(block[1], base)).as_posix()
            out.append(f"![{block[2]}]({link})")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
    return "\n\n".join(out) + "\n"


def _levels(header: list) -> list[list[str]]:
    """A header as a list of rows (levels), whether given as one row or several."""
    return [list(map(str, row)) for row in header] if header and isinstance(header[0], list) \
        else [list(map(str, header))]


def _header_names(header: list) -> list[str]:
    """One name per column: the levels joined (markdown has one header row)."""
    levels = _levels(header)
    if len(levels) == 1:
        return levels[0]
    return [levels[-1][0]] + [" ".join(level[j] for level in levels)
                              for j in range(1, len(levels[0]))]


def _html_header(header: list) -> str:
    """<tr> rows; in the upper levels equal neighbouring cells merge (colspan), and the first
    column's heading spans every level."""
    levels = _levels(header)
    rows = []
    for depth, level in enumerate(levels):
        last = depth == len(levels) - 1
        cells = []
        if len(levels) == 1:
            cells = [f"<th>{_inline_html(h)}</th>" for h in level]
        elif depth == 0:
            cells.append(f'<th rowspan="{len(levels)}" class="variant">'
                         f"{_inline_html(levels[-1][0])}</th>")
        if len(levels) > 1:
            j = 1
            while j < len(level):
                span = 1
                while (not last and j + span < len(level) and level[j + span] == level[j]
                       and all(up[j + span] == up[j] for up in levels[:depth])):
                    span += 1
                attr = f' colspan="{span}"' if span > 1 else ""
                cells.append(f"<th{attr}>{_inline_html(level[j])}</th>")
                j += span
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
         ".wide{overflow-x:auto;max-width:100%;margin:1em 0}"
         "table{border-collapse:collapse;font-size:0.9em}"
         "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}td:first-child,th.variant{white-space:nowrap}"
         "td{white-space:nowrap}td:last-child{white-space:normal;min-width:12em}"
         "img{max-width:100%}code{background:#f5f5f5;padding:0 3px}"
         "figcaption{font-size:0.9em;color:#444}")


def to_html(blocks: list[tuple], title: str) -> str:
    """A self-contained HTML page: images inlined as base64 PNG data URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(block[1])}</p>")
        elif kind == "table":
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row)
                           + "</tr>" for row in block[2])
            out.append(f'<div class="wide"><table><thead>{_html_header(block[1])}</thead>'
                       f"<tbody>{body}</tbody></table></div>")
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            out.append(f'<figure><img alt="{html.escape(block[2])}" '
                       f'src="data:image/png;base64,{data}"><figcaption>'
                       f"{_inline_html(block[2])}</figcaption></figure>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1])
                       + "</ul>")
    return "\n".join([*out, "</body></html>"]) + "\n"


# ---------------------------------------------------------------- the report


def protocol(analysis: Analysis) -> list[str]:
    """The protocol that produced the table, in words (one paragraph per step)."""
    over = [c.removeprefix(CONFIG_PREFIX) for c in analysis.over]
    metrics = analysis.metrics
    split = "test" if metrics and metrics[0].startswith("test") else "validation (eval)"
    ignored = "the seed" + "".join(f" and `{k}`" for k in over)
    text = [f"**Grouping.** Runs are grouped by every config key except {ignored} (and output "
            "or logging settings); a row aggregates the finished (status `done`) seeds of one "
            "group. Running, failed, preempted and invalid runs are listed under \"Runs not "
            "in the table\" and never averaged in."]
    if analysis.over:
        direction = "highest" if higher_is_better(analysis.select_by) else "lowest"
        keys = ", ".join(f"`{k}`" for k in over)
        text.append(f"**Selection.** For each variant, the value of {keys} "
                    f"with the {direction} mean `{analysis.select_by}` over its finished seeds "
                    "(validation split) was selected (ties: more seeds, then the first value). "
                    f"The table reports {', '.join(f'`{m}`' for m in metrics)} of the selected "
                    "runs, on the " + split + " split; test metrics were never read to select.")
    elif analysis.select_by is not None:
        text.append(f"**Selection.** No `--over` key: nothing was selected; `{analysis.select_by}`"
                    f" is shown beside the {split}-split metrics.")
    else:
        warn = (" Choosing between rows that differ only in a hyper-parameter by these test "
                "numbers would be selecting on test: use `--select-by eval/... --over KEY`."
                if split == "test" else "")
        text.append(f"**Selection.** None: every configuration is its own row; metrics are on "
                    f"the {split} split.{warn}")
    text.append("**Statistics.** Cells are mean ± sample std (n−1) over seeds; the 95% CI of "
                "the mean is the Student-t interval mean ± t(0.975, n−1)·std/√n, undefined for "
                "one seed.")
    if analysis.baseline is not None:
        name = ("Welch's t-test (unequal variances, Welch–Satterthwaite degrees of freedom)"
                if analysis.test == "welch" else "bootstrap test of the difference of means "
                "(10,000 resamples under the null; needs several seeds to mean much)")
        text.append(f"**Significance.** Each row is compared with the baseline "
                    f"`{analysis.baseline}` of its task (the baseline group agreeing on the most "
                    f"other settings) by a two-sided {name}; p-values are Holm-corrected over the "
                    "rows of a task, per metric. Undefined (—) with fewer than two seeds.")
    reference = ("the baseline" if analysis.baseline is not None else
                 "the median of the rows with the same settings outside the attention")
    text.append(f"**Fairness.** ⚠ flags a parameter count more than {PARAMS_TOLERANCE:.0%} away "
                f"from {reference} (the LRA rule, Tay et al. 2021), fewer finished seeds than "
                "launched or than other rows, a selected value at the edge of its grid, a "
                "variant whose window, block, stride, k or landmarks cover the whole input "
                "length (\"softmax in disguise\": it computes full softmax attention) and "
                + ("an accuracy still at the task's chance level (mean ≤ chance + max(95% CI "
                   f"half-width, {CHANCE_MARGIN}))." if accuracy_metric(analysis.metrics)
                   else "(for accuracy metrics) an accuracy still at chance."))
    return text + [f"**Note.** {n}" for n in analysis.notes]


def _selection_blocks(analysis: Analysis) -> list[tuple]:
    candidates = analysis.candidates
    if candidates.empty:
        return []
    names = [c.removeprefix(CONFIG_PREFIX) for c in analysis.over]
    rows = [[r["task"], r["label"], *(format_value(r[c]) for c in analysis.over),
             format_stat(r["mean"], r["std"]), str(r["n"]), "✓" if r["chosen"] else ""]
            for _, r in candidates.iterrows()]
    header = ["task", "variant", *names, f"{analysis.select_by} (val)", "n", "selected"]
    return [("h", 2, "Selection"), ("table", header, rows)]


def _pivot_blocks(part: pd.DataFrame, analysis: Analysis, axes: list[str]) -> list[tuple]:
    """The pivoted main table of one task, its caption and the flags of its cells."""
    metric = analysis.metrics[0]
    levels, rows, notes = tables.pivot_table(part, metric, axes)
    names = ", ".join(f"`{a.removeprefix(CONFIG_PREFIX)}`" for a in axes)
    bounded = (" (an interval that would cross 0 or 1 is shown as [low, high], clipped)"
               if tables.is_accuracy(metric) else "")
    caption = (f"{metric}: mean ± 95% CI half-width (Student t; none for one seed){bounded}, "
               f"(n) finished seeds, per variant (rows) and {names} (columns). "
               "Stars: Holm-corrected significance against the baseline; ⚠: flagged (below). "
               "Every column of every row is in the appendix table and results.csv.")
    chance = tables.chance_text(part, analysis.metrics)
    if chance:
        caption += " " + chance[0].upper() + chance[1:] + "."
    blocks: list[tuple] = [("table", levels, rows), ("p", caption)]
    settings = tables.variant_settings(part, axes)
    if settings:
        blocks += [("p", "Variant settings (model.attention_kwargs, and settings the study "
                         "fixes per variant):"), ("list", settings)]
    if notes:
        blocks += [("p", "Flags (" + tables.FLAGS_LEGEND + "):"), ("list", notes)]
    return blocks


def _results_blocks(analysis: Analysis) -> tuple[list[tuple], list[tuple]]:
    """(Results section, appendix): per task the pivoted table when the task's rows differ in
    settings outside the attention, with the long table in the appendix; else the long table."""
    table, metrics = analysis.table, analysis.metrics
    if table.empty:
        return [("p", "No finished runs yet.")], []
    tasks = tables.tasks_of(table)
    blocks: list[tuple] = []
    appendix: list[tuple] = []
    for task, part in tasks:
        heading = [("h", 3, f"Task: {task or 'unknown'}")] if len(tasks) > 1 else []
        long = [("table", *table_rows(part, metrics)), ("p", legend(part, metrics,
                                                                    analysis.test))]
        axes = tables.swept_axes_of(part)
        if axes and metrics:
            blocks += heading + _pivot_blocks(part, analysis, axes)
            appendix += heading + long
        else:
            blocks += heading + long
    if appendix:
        appendix = [("h", 2, "Appendix: every row"), ("p", "One row per group (variant and "
                     "setting): the long form of the tables above, also in `results.csv`."),
                    *appendix]
    return blocks, appendix


def _csv_frames(analysis: Analysis) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = analysis.table.drop(columns=["run_index"], errors="ignore")
    if "run_dirs" in table:
        table = table.assign(run_dirs=table["run_dirs"].map(";".join))
    runs = analysis.runs.drop(columns="group")
    runs.insert(2, "label", runs.pop("label"))
    return table, runs


def has_benchmarks(paths: Sequence[str]) -> bool:
    """Whether some benchmark.json under `paths` has rows to plot."""
    return not figures.load_benchmarks(paths)[0].empty


def write(df: pd.DataFrame, paths: Sequence[str], out_dir: str | os.PathLike,
          metrics: Sequence[str] | None = None, *, latex: bool = False, heatmaps: bool = False,
          x: str | None = None, by: str | None = None, series: Sequence[str] = (),
          **options) -> tuple[str, Path]:
    """Analyse `df` (`options` go to `compare.analyze`) and write into `out_dir`: report.md,
    report.html, results.csv (one row per table row, with p-values and flags), runs.csv (one
    row per run), PNG figures, results.tex with `latex`. Returns (markdown, report.md path)."""
    analysis = analyze(df, metrics, **options) if not df.empty else None
    if analysis is not None:
        # bad keys fail before anything is written
        x, by = figures.swept_axes(analysis, x, by)
        series = figures.series_keys(analysis, series)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple] = [("h", 1, "Comparison of " + ", ".join(f"`{p}`" for p in paths))]
    markdown = ""
    if analysis is not None:
        counts = df["status"].value_counts()
        count_text = ", ".join(f"{counts[s]} {s}" for s in ("done", *NOT_DONE_ORDER)
                               if s in counts)
        blocks += [("p", f"{len(df)} runs: {count_text}."), ("h", 2, "Protocol")]
        blocks += [("p", t) for t in protocol(analysis)]
        results, appendix = _results_blocks(analysis)
        blocks += [("h", 2, "Results"), *results, *_selection_blocks(analysis)]
        markdown = tables.markdown_table(analysis.table, analysis.runs, analysis.metrics,
                                         analysis.test)
        table, runs = _csv_frames(analysis)
        rundir.atomic_write(out / "results.csv", lambda tmp: table.to_csv(tmp, index=False))
        rundir.atomic_write(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
        if latex and not analysis.table.empty:
            rundir.atomic_write_text(out / "results.tex",
                                     latex_tables(analysis.table, analysis.metrics))
            blocks.append(("p", "LaTeX (booktabs) tables: `results.tex`."))
    blocks += figures.figure_blocks(analysis, paths, out, x=x, by=by, series=series,
                                    heatmaps=heatmaps)
    if analysis is not None:
        blocks += appendix
        not_done = tables.not_done_items(analysis.runs)
        if not_done:
            blocks.append(("h", 2, "Runs not in the table"))
            for title, items in not_done:
                blocks += [("h", 3, title), ("list", items)]
        blocks += provenance_blocks(df, paths)
        blocks += [("h", 2, "Run directories"),
                   ("list", [f"`{r.run_dir}` ({r.status})" for r in df.itertuples()])]
    report = rundir.atomic_write_text(out / "report.md", to_markdown(blocks, out))
    rundir.atomic_write_text(out / "report.html", to_html(blocks, "attnjax comparison"))
    return markdown or "_No runs; see the benchmark plots in the report._", report
