"""The capability matrix: every variant declares what it can do, and docs/VARIANTS.md is it."""

from __future__ import annotations

import json
import math

from attnjax import attention, variants
from tests.conftest import REPO, run_cli


def test_every_variant_has_paper_complexity_and_costs():
    for row in variants.matrix():
        doc = (row["summary"] + " " + (__import__(
            attention.get(row["name"]).__module__, fromlist=["x"]).__doc__ or "")).lower()
        assert "complexity" in doc or "o(" in doc, f"{row['name']}: docstring lacks complexity"
        assert math.isfinite(row["flops"]) and row["flops"] >= 0, row["name"]
        assert row["state_size"] is None or row["state_size"] >= 0


def test_docs_variants_md_is_in_sync():
    expected = variants.markdown(variants.matrix())
    actual = (REPO / "docs" / "VARIANTS.md").read_text()
    assert actual == expected, "run: ./launch.sh variants > docs/VARIANTS.md"


def test_cli_variants_json():
    proc = run_cli("variants", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == attention.names()
    assert {"causal", "cross_attention", "flops", "state_size", "settings"} <= set(rows[0])
