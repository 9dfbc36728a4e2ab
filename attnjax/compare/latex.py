"""LaTeX (booktabs) tables of the comparison, one per task (`attnjax compare --latex`)."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from attnjax.compare.groups import higher_is_better, is_missing
from attnjax.compare.tables import _spec, tasks_of


def _tex(text: Any) -> str:
    replace = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
               "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
               "^": r"\textasciicircum{}"}
    return "".join(replace.get(ch, ch) for ch in str(text))


def latex_tables(table: pd.DataFrame, metrics: list[str]) -> str:
    """booktabs tables (one per task): mean ± std, best mean in bold, Holm stars, n, params;
    a dagger marks flagged rows (listed in the caption)."""
    out = []
    for task, part in tasks_of(table):
        best = {m: (part[f"{m}_mean"].max() if higher_is_better(m) else part[f"{m}_mean"].min())
                for m in metrics}
        head = ["Variant", *(_tex(m) for m in metrics), "$n$", "Params"]
        lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{l" + "c" * len(metrics)
                 + "rr}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
        flagged = []
        for _, row in part.iterrows():
            name = _tex(row["label"]) + (r"$^\dagger$" if row.get("flags") else "")
            if row.get("flags"):
                flagged.append(f"{_tex(row['label'])}: {_tex(row['flags'])}")
            cells = [name]
            for m in metrics:
                mean, std = row[f"{m}_mean"], row[f"{m}_std"]
                if is_missing(mean):
                    cells.append("--")
                    continue
                spec = _spec(mean)
                value = f"{mean:{spec}}" if is_missing(std) else f"{mean:{spec}} \\pm {std:{spec}}"
                value = rf"\mathbf{{{value}}}" if mean == best[m] else value
                star = row.get(f"{m}_stars") or ""
                cells.append(f"${value}" + (f"^{{{star}}}$" if star else "$"))
            params = "--" if is_missing(row["num_params"]) else f"{row['num_params']:,.0f}"
            cells += [str(int(row["n"])), params.replace(",", "{,}")]
            lines.append(" & ".join(cells) + r" \\")
        caption = (f"{_tex(task or 'Results')}: mean $\\pm$ std over seeds; best in bold; "
                   r"stars: Holm-corrected p $<$ 0.05/0.01/0.001 against the baseline.")
        if flagged:
            caption += r" $^\dagger$" + "; ".join(flagged) + "."
        lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{caption}}}",
                  rf"\label{{tab:{re.sub(r'[^A-Za-z0-9]+', '-', task or 'results')}}}",
                  r"\end{table}"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


