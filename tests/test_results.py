"""The shipped study results (docs/results/<study>/, made by `attnjax compare` from the
`:cpu` sweeps) and docs/RESULTS.md, which quotes them: every number the docs give for a study
must be in that study's results.csv, so no claim outlives the data behind it."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from tests.conftest import REPO

RESULTS = REPO / "docs" / "results"
RESULTS_MD = REPO / "docs" / "RESULTS.md"
STUDIES = ("zoology_fig2-cpu", "lra-cpu")
# a table cell "0.998 ± 0.004 (3)" or, clipped to [0, 1], "0.080 [0.000, 0.629] (2)"
CELL = re.compile(r"(\d\.\d{3}) (?:± (\d\.\d{3})|\[(\d\.\d{3}), (\d\.\d{3})\]) \((\d+)\)")
NUMBER = re.compile(r"(?<![\d.])0\.\d{3}(?!\d)")


def _rows(study: str) -> pd.DataFrame:
    """results.csv with each row's config as columns (leaf names: attention, d_model, ...)."""
    table = pd.read_csv(RESULTS / study / "results.csv")
    configs = [{k.rsplit(".", 1)[-1]: v for k, v in json.loads(g).items()
                if not k.startswith("config.model.attention_kwargs")}
               for g in table["group"]]
    return pd.concat([table, pd.DataFrame(configs, index=table.index)], axis=1)


def _sections() -> dict[str, str]:
    """RESULTS.md split at its `<!-- study: NAME -->` markers."""
    text = RESULTS_MD.read_text()
    parts = re.split(r"<!-- study: ([\w.-]+) -->", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _matches(rows: pd.DataFrame, variant: str, header: str) -> pd.DataFrame:
    """The rows of `variant` whose config holds every `key=value` of a column header."""
    out = rows[rows["attention"] == variant]
    for key, value in re.findall(r"(\w+)=([\w.]+)", header):
        out = out[out[key].astype(str).isin([value, str(float(value))])]
    return out


@pytest.mark.parametrize("study", STUDIES)
def test_a_shipped_study_is_complete_small_and_traceable(study):
    folder = RESULTS / study
    for name in ("report.md", "report.html", "results.csv", "runs.csv"):
        assert (folder / name).is_file(), name
    assert list(folder.glob("*.png"))
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert not any("checkpoints" in f.parts for f in files)
    assert all(f.stat().st_size < 3_000_000 for f in files), "shipped files stay small"
    report = (folder / "report.md").read_text()
    assert "## Provenance" in report and "git revision" in report and "wall time" in report
    rows = pd.read_csv(folder / "results.csv")
    assert (rows["n"] >= 3).all(), "every reported row has at least 3 seeds"
    assert rows["selected"].notna().all(), "learning rates were selected on validation"


def test_results_md_covers_every_shipped_study():
    assert set(_sections()) == set(STUDIES)
    assert {p.name for p in RESULTS.iterdir() if p.is_dir()} == set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_every_table_cell_in_results_md_is_in_the_shipped_data(study):
    rows, cells = _rows(study), 0
    for table in re.findall(r"(?:^\|.*\|\n)+", _sections()[study], flags=re.M):
        lines = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
        header = lines[0]
        for line in lines[2:]:
            variant = line[0].split()[0].strip("`*")  # "softmax (Transformer)" -> softmax
            for column, cell in zip(header, line, strict=True):
                found = CELL.fullmatch(cell.replace(" ⚠", "").strip())
                if not found:
                    continue
                match = _matches(rows, variant, column)
                assert len(match) == 1, (study, variant, column, len(match))
                row = match.iloc[0]
                mean, half, low, high, n = found.groups()
                assert f"{row['test/accuracy_mean']:.3f}" == mean, (variant, column)
                assert int(row["test/accuracy_n"]) == int(n), (variant, column)
                if half:
                    assert f"{row['test/accuracy_ci']:.3f}" == half, (variant, column)
                else:
                    m, h = row["test/accuracy_mean"], row["test/accuracy_ci"]
                    assert (f"{max(m - h, 0):.3f}", f"{min(m + h, 1):.3f}") == (low, high)
                cells += 1
    assert cells >= 4, f"{study}: RESULTS.md quotes no table of its results"


@pytest.mark.parametrize("study", STUDIES)
def test_every_number_in_results_md_prose_is_in_the_shipped_data(study):
    """Numbers 0.xyz outside tables (the words) are means, interval ends or the chance level
    of some row of that study."""
    rows = _rows(study)
    known = set()
    for _, row in rows.iterrows():
        m, h = row["test/accuracy_mean"], row.get("test/accuracy_ci", float("nan"))
        known |= {f"{m:.3f}", f"{row['chance']:.3f}"}
        if pd.notna(h):
            known |= {f"{h:.3f}", f"{max(m - h, 0):.3f}", f"{min(m + h, 1):.3f}"}
    prose = "\n".join(line for line in _sections()[study].splitlines()
                      if not line.startswith("|"))
    unknown = sorted(set(NUMBER.findall(prose)) - known)
    assert not unknown, f"{study}: numbers in RESULTS.md not in results.csv: {unknown}"
