"""attnjax bench attention on CPU at toy sizes: the JSON's schema and bad input. Never timed."""

from __future__ import annotations

import json

import pytest

from attnjax import cli
from attnjax.bench import attention as bench
from attnjax.registry import ConfigError

ROW_KEYS = {"attention", "seq_len", "batch_size", "d_model", "num_heads", "causal", "ms_per_step",
            "tokens_per_second", "peak_memory_bytes", "compiled_temp_bytes", "status", "reason",
            "implementation", "ms_forward", "flops_forward", "tflops_forward",
            "peak_percent_forward", "tflops_fwd_bwd", "peak_percent_fwd_bwd"}
TOY = ["--seq-lens", "8,16", "--batch-size", "2", "--d-model", "16", "--num-heads", "2",
       "--repeats", "1", "--no-isolate"]


def test_rows_have_the_schema_and_positive_numbers(tmp_path, capsys):
    out = tmp_path / "bench"
    assert bench.main(["--attention", "softmax,linear,linformer", *TOY, "--out", str(out)]) == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert set(report) == {"kind", "device", "date", "versions", "command", "dtype", "peak_flops",
                           "flops_convention", "rows"}
    assert report["peak_flops"] is None  # CPU: no peak, so no % of peak anywhere
    assert report["kind"] == "attention" and report["versions"]["jax"]
    assert report["command"].startswith("attnjax bench attention --attention softmax,linear")
    rows = report["rows"]
    assert [(r["attention"], r["seq_len"]) for r in rows] == [
        (a, n) for a in ("softmax", "linear", "linformer") for n in (8, 16)]
    for row in rows:
        assert set(row) == ROW_KEYS
        assert (row["batch_size"], row["d_model"], row["num_heads"], row["causal"]) == (
            2, 16, 2, True)
    ok = [r for r in rows if r["attention"] != "linformer"]
    for row in ok:
        assert row["status"] == "ok" and row["reason"] is None, row
        assert row["ms_per_step"] > 0 and row["tokens_per_second"] > 0
        assert row["compiled_temp_bytes"] is None or row["compiled_temp_bytes"] >= 0
        assert row["peak_memory_bytes"] is None  # CPU reports no allocator peak
        assert row["ms_forward"] > 0 and row["tflops_forward"] > 0 and row["tflops_fwd_bwd"] > 0
        assert row["peak_percent_forward"] is None and row["peak_percent_fwd_bwd"] is None
        heads = 2  # the declared FLOPs of the mixing, per sequence and head, x batch x heads
        assert row["flops_forward"] == 2 * heads * bench.attention.create(row["attention"]).flops(
            row["seq_len"], row["seq_len"], 16 // heads)
    assert [r["implementation"] for r in rows[:2]] == ["blockwise", "blockwise"]  # softmax auto
    assert rows[2]["implementation"] is None  # linear has one path
    for row in rows[4:]:  # linformer is bidirectional only
        assert row["status"] == "skipped" and "causal" in row["reason"]
        assert row["ms_per_step"] is None
    table = capsys.readouterr().out
    assert "| softmax | 16 |" in table and "skipped" in table and "fwd+bwd TFLOP/s" in table


def test_rates_follow_the_stated_convention():
    """TFLOP/s from FLOPs and ms; forward + backward counts 3 x the forward; % of peak only
    when a peak is known."""
    r = bench.rates(2e12, ms_forward=1000.0, ms_fwd_bwd=2000.0, peak=10e12)
    assert r["tflops_forward"] == pytest.approx(2.0) and r["tflops_fwd_bwd"] == pytest.approx(3.0)
    assert r["peak_percent_forward"] == pytest.approx(20.0)
    assert r["peak_percent_fwd_bwd"] == pytest.approx(30.0)
    unknown = bench.rates(2e12, ms_forward=1000.0, ms_fwd_bwd=2000.0, peak=None)
    assert unknown["peak_percent_forward"] is None and unknown["peak_percent_fwd_bwd"] is None


def test_all_selects_only_attention_level_variants_that_support_the_mode():
    causal = bench.select_variants("all", causal=True)
    assert "softmax" in causal and "linformer" not in causal and "gru" not in causal
    bidirectional = bench.select_variants("all", causal=False)
    assert "linformer" in bidirectional and "deltanet" not in bidirectional


def test_unknown_variant_or_setting_is_a_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"unknown attention 'nope'.*Known: .*softmax"):
        bench.main(["--attention", "softmax,nope", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="window_siz"):
        bench.main(["--attention", "local:window_siz=4", "--out", str(tmp_path)])
    assert cli.main(["bench", "attention", "--attention", "nope"]) == 2
    assert "unknown attention 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written
