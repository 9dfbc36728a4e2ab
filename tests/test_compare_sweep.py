"""attnjax.compare on a fabricated Zoology-style MQAR sweep: pivoted table, fairness flags,
error bars and the layout of every figure (no training involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attnjax import compare
from attnjax.compare import flags, plots, tables

VARIANTS = {  # attention -> (attention_kwargs, test accuracy at (seq_len, d_model))
    "softmax": ({"implementation": "reference"}, lambda L, d: 0.99),
    "local": ({"window_size": 64}, lambda L, d: 0.97 if L == 64 else 0.40),
    "linear": ({"chunk_size": 64}, lambda L, d: 0.126),  # at chance (1/8) everywhere
    "based": ({"window_size": 16, "feature_dim": 16}, lambda L, d: 0.3 + d / 400),
}
SEQ_LENS, D_MODELS, SEEDS, LRS = (64, 128), (32, 64, 128), (0, 1, 2), (1e-3, 3e-3)


def _write(run: Path, config: dict, summary: dict) -> None:
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps(summary))
    final = summary["final_metrics"]["eval/accuracy"]
    lines = [{"step": s, "eval/accuracy": final * s / 100} for s in (25, 50, 100)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")


def make_sweep(root: Path, seeds=SEEDS) -> Path:
    """4 variants x 2 seq_lens x 3 d_models x 2 learning rates x seeds, done; mlp_dim = 2 d_model
    co-varies with d_model as in a real sweep."""
    for attention, (kwargs, accuracy) in VARIANTS.items():
        for L in SEQ_LENS:
            for d in D_MODELS:
                for lr in LRS:
                    for seed in seeds:
                        noise = 0.004 * (seed - 1) - (0.05 if lr == 3e-3 else 0.0)
                        test = min(1.0, max(0.0, accuracy(L, d) + noise))
                        config = {"seed": seed, "learning_rate": lr, "workdir": "",
                                  "model": {"attention": attention, "attention_kwargs": kwargs,
                                            "d_model": d, "mlp_dim": 2 * d, "num_layers": 2},
                                  "task": {"name": "mqar", "seq_len": L, "num_kv_pairs": 8,
                                           "vocab_size": 64}}
                        summary = {"status": "done", "step": 100, "num_params": 1000 * d,
                                   "git_revision": "abc123def4567890", "wall_time_s": 60.0,
                                   "versions": {"jax": "0.10.2", "attnjax": "0.1.0"},
                                   "device": {"kind": "cpu", "used": 1},
                                   "started_at": f"2026-12-02T09:{seed:02d}:00+00:00",
                                   "updated_at": f"2026-12-02T10:{seed:02d}:00+00:00",
                                   "final_metrics": {"eval/accuracy": test + 0.01,
                                                     "test/accuracy": test,
                                                     "test_len256/accuracy": test / 2,
                                                     "test_len512/accuracy": test / 3}}
                        _write(root / f"{attention}_L{L}_d{d}_lr{lr}_s{seed}", config, summary)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("mqar"))


@pytest.fixture(scope="module")
def analysis(sweep: Path):
    return compare.analyze(compare.load_runs([sweep]), over=["learning_rate"])


def test_pivot_rows_are_variants_columns_are_the_swept_cells(analysis):
    part = analysis.table
    axes = tables.swept_axes_of(part)
    # mlp_dim co-varies with d_model: it is an axis of the grid, but adds no cells
    assert axes == ["config.model.d_model", "config.model.mlp_dim", "config.task.seq_len"]
    levels, rows, notes = tables.pivot_table(part, "test/accuracy", axes)
    assert len(rows) == 4 and all(len(r) == 1 + 6 for r in rows)  # 2 seq_lens x 3 d_models
    assert [len(level) for level in levels] == [7, 7, 7]
    assert levels[-1][0] == "variant" and levels[0][1] == "d_model=32"
    assert [r[0] for r in rows] == ["softmax", "local", "based", "linear"]  # first cell: best first
    softmax = next(r for r in rows if r[0] == "softmax")
    assert softmax[1].startswith("0.990 ± ") and softmax[1].endswith("(3)")
    assert any("linear at " in n and "at chance" in n for n in notes)


def test_report_pivots_and_moves_the_long_table_to_an_appendix(sweep: Path, tmp_path: Path):
    out = tmp_path / "report"
    assert compare.main([str(sweep), "--out", str(out), "--over", "learning_rate",
                         "--x", "d_model", "--by", "seq_len"]) == 0
    md = (out / "report.md").read_text()
    results = md.split("## Results")[1].split("## Selection")[0]
    assert "| variant | d_model=32 mlp_dim=64 seq_len=64 |" in results
    assert results.count("\n| ") == 4 + 1  # header + 4 variants (markdown: one header row)
    assert "chance level of test/accuracy" in results.lower() and "0.125" in results
    appendix = md.split("## Appendix: every row")[1]
    assert appendix.count("| attention=") >= 24
    assert len(pd.read_csv(out / "results.csv")) == 24
    page = (out / "report.html").read_text()
    assert '<div class="wide"><table>' in page and "overflow-x:auto" in page
    assert 'colspan="2"' in page  # seq_len header over its d_model cells? (levels merge)
    assert 'rowspan="3" class="variant"' in page
    provenance = md.split("## Provenance")[1].split("##")[0]
    assert "git revision: `abc123def456`" in provenance
    assert "jax 0.10.2" in provenance and "cpu × 1" in provenance
    assert "62.0 min from the first run's start" in provenance  # 09:00 to 10:02
    assert "144 finished runs took 144.0 min together" in provenance


def test_softmax_in_disguise(analysis):
    table = analysis.table
    flagged = table[table["flags"].str.contains("softmax in disguise")]
    # local's window 64 covers L=64 but not L=128; based's window 16 never; softmax is softmax
    assert set(flagged["label"].str.split().str[0]) == {"attention=local"}
    assert all(json.loads(g)["config.task.seq_len"] == 64 for g in flagged["group"])
    assert len(flagged) == 3 and "window_size=64 >= L=64" in flagged["flags"].iloc[0]


def test_softmax_in_disguise_rules():
    run = lambda attention, L=64, **kw: pd.Series({
        "config.model.attention": attention, "config.task.name": "mqar",
        "config.task.seq_len": L, **{f"config.model.attention_kwargs.{k}": v
                                     for k, v in kw.items()}})
    assert flags.softmax_in_disguise(run("block_local", block_size=64))
    assert not flags.softmax_in_disguise(run("block_local", block_size=32))
    assert flags.softmax_in_disguise(run("topk", 16, k=16))
    assert not flags.softmax_in_disguise(run("softmax", block_size=4096))  # a kernel tile
    assert flags.softmax_in_disguise(run("bigbird", 256, block_size=64, num_window_blocks=3,
                                         num_global_blocks=2, num_random_blocks=3))
    assert not flags.softmax_in_disguise(run("bigbird", 1024, block_size=64,
                                             num_window_blocks=3, num_global_blocks=2,
                                             num_random_blocks=3))
    unknown = run("local", window_size=64)
    unknown["config.task.name"] = "no_such_task"
    assert not flags.softmax_in_disguise(unknown)  # unknown task: no length, no flag


def test_at_chance_triggers_and_does_not(analysis):
    table = analysis.table
    assert set(table["chance"]) == {0.125}
    at = table[table["flags"].str.contains("at chance")]
    assert set(at["label"].str.split().str[0]) == {"attention=linear"} and len(at) == 6
    assert flags.at_chance(0.13, math.nan, 0.125)  # one seed: within the 0.02 margin
    assert not flags.at_chance(0.16, math.nan, 0.125)
    assert flags.at_chance(0.30, 0.2, 0.125)  # a wide CI reaches chance
    assert not flags.at_chance(0.30, 0.01, 0.125)
    assert not flags.at_chance(0.13, 0.01, None)  # a task without a chance level


def test_error_bars_clip_to_unit_interval_and_skip_single_seeds():
    mask, err = plots.error_bars(np.array([0.99, 0.5, 0.02]), np.array([0.05, 0.1, math.nan]),
                                 np.array([3, 3, 1]), bounded=True)
    assert list(mask) == [True, True, False]
    np.testing.assert_allclose(err, [[0.05, 0.1], [0.01, 0.1]])  # 0.99 + 0.05 clipped to 1
    _, raw = plots.error_bars(np.array([0.99]), np.array([0.05]), np.array([3]), bounded=False)
    np.testing.assert_allclose(raw, [[0.05], [0.05]])
    assert "clipped to [0, 1]" in plots.ci_caption("test/accuracy", [3, 1])
    assert "no confidence intervals" in plots.ci_caption("test/accuracy", [1, 1])
    assert "95%" not in plots.ci_caption("test/accuracy", [1, 1])


def test_single_seed_plots_have_no_error_bars(tmp_path: Path):
    root = make_sweep(tmp_path / "one", seeds=(0,))
    analysis = compare.analyze(compare.load_runs([root]), over=["learning_rate"])
    figs = _capture(lambda: plots.plot_swept(analysis.table, "test/accuracy",
                                            "config.model.d_model", "config.task.seq_len",
                                            tmp_path / "s.png"))
    from matplotlib.container import ErrorbarContainer

    assert figs and not [c for ax in figs[0].axes for c in ax.containers
                         if isinstance(c, ErrorbarContainer)]
    _, md = compare.write_report([root], tmp_path / "out", over=["learning_rate"])
    assert "95% t-CI" not in md.read_text().split("## Figures")[1].split("## Appendix")[0]


def test_swept_plot_lines_are_variants_not_every_covarying_setting(analysis, tmp_path):
    figs = _capture(lambda: plots.plot_swept(analysis.table, "test/accuracy",
                                            "config.model.d_model", "config.task.seq_len",
                                            tmp_path / "s.png"))
    labels = [t.get_text() for t in figs[0].legends[0].get_texts()]
    assert sorted(labels) == ["chance", *sorted(f"attention={a}" for a in VARIANTS)] or \
        len(labels) == 5
    for ax in figs[0].axes:
        if ax.get_visible():
            lines = [line for line in ax.get_lines() if line.get_label() != "chance"
                     and not line.get_label().startswith("_")]
            assert len(lines) == 4 and all(len(line.get_xdata()) == 3 for line in lines)
    keys = plots.series_columns(analysis.table["group"].map(compare.analysis.config_of),
                                "config.model.d_model", "config.task.seq_len",
                                analysis.table["task"], ["config.model.num_layers"])
    assert keys[:2] == ["config.model.attention", "config.model.attention_kwargs.chunk_size"] \
        or "config.model.num_layers" in keys


def _capture(draw) -> list:
    """Figures saved while `draw()` runs (plots._save wrapped)."""
    figs, save = [], plots._save

    def keep(fig, path):
        figs.append(fig)
        return save(fig, path)

    plots._save = keep
    try:
        draw()
    finally:
        plots._save = save
    return figs


def _texts(fig):
    """Every drawn text: titles, axis labels, tick labels inside the view, legend texts."""
    texts = [*fig.texts, *(t for legend in fig.legends for t in legend.get_texts())]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())),
                                  (ax.yaxis, sorted(ax.get_ylim()))):
            texts += [tick.label1 for tick, loc in zip(axis.get_major_ticks(),
                                                       axis.get_majorticklocs(), strict=False)
                      if low <= loc <= high]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def test_every_figure_layout(sweep: Path, tmp_path: Path):
    """Legends never cover an axes' data area, and every text lies inside the saved figure."""
    out = tmp_path / "out"
    figs = _capture(lambda: compare.write_report([sweep], out, over=["learning_rate"],
                                                 x="d_model", by="seq_len"))
    assert len(figs) == 4  # curves, bars, swept, lengths
    for fig in figs:
        fig.canvas.draw()  # at the figure's own dpi, layout done
        renderer = fig.canvas.get_renderer()
        saved = fig.get_tightbbox(renderer).padded(0.1)  # bbox_inches="tight", pad 0.1 in
        saved = saved.transformed(fig.dpi_scale_trans)
        areas = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()]
        for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
            box = legend.get_window_extent(renderer)
            assert not any(box.overlaps(area) for area in areas), "legend covers data"
        for text in _texts(fig):
            box = text.get_window_extent(renderer)
            assert (box.x0 >= saved.x0 - 1 and box.x1 <= saved.x1 + 1 and box.y0 >= saved.y0 - 1
                    and box.y1 <= saved.y1 + 1), f"text {text.get_text()!r} outside the figure"
        for ax in fig.axes:  # titles fit their panel (wrapped)
            if ax.get_visible() and ax.get_title():
                title = ax.title.get_window_extent(renderer)
                assert title.width <= ax.get_window_extent(renderer).width * 1.05


def test_a_setting_fixed_per_variant_is_not_a_pivot_axis():
    # as Zoology's study: attention gets positions and dropout, the other mixers none
    rows = []
    for attention, extra in (("softmax", {"config.model.positional": "sinusoidal"}),
                             ("h3", {"config.model.positional": "none"})):
        for d in (32, 64):
            rows.append(json.dumps({"config.model.attention": attention,
                                    "config.model.d_model": d, **extra}))
    assert tables.swept_axes_of(pd.DataFrame({"group": rows})) == ["config.model.d_model"]
