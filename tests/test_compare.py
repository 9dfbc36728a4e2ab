"""attnjax.compare on run dirs built by hand (docs/RUN_DIR.md); no training involved."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

import attnjax
from attnjax import compare, stats
from attnjax.compare import figures, plots, report, runs
from attnjax.compare.runs import find_run_dirs, read_curve

ROOT = Path(__file__).resolve().parents[1]

# Final eval/accuracy and eval/loss per (variant, seed); the numbers the tests check against.
ACCURACY = {"softmax": [0.90, 0.92, 0.97], "local": [0.80, 0.86]}
LOSS = {"softmax": [0.30, 0.25, 0.20], "local": [0.50, 0.40]}
PARAMS = {"softmax": 1000, "local": 1200}


def _config(attention: str, seed: int, task: str = "mqar", workdir: str = "", window: int = 8):
    """A resolved-looking config; each variant has its own (defaulted) settings."""
    kwargs = {"window_size": window} if attention == "local" else {"implementation": "reference"}
    return {
        "seed": seed,
        "workdir": workdir,
        "model": {"attention": attention, "attention_kwargs": kwargs, "num_layers": 2},
        "task": {"name": task, "seq_len": 64},
        "optimizer": {"learning_rate": 1e-3, "betas": [0.9, 0.98]},
    }


def _summary(status: str, **extra) -> dict:
    return {
        "status": status,
        "reason": None,
        "step": 100,
        "num_train_steps": 100,
        "num_params": 1000,
        "steps_per_second": 10.0,
        "tokens_per_second": 640.0,
        "wall_time_s": 10.0,
        "attention": "softmax",
        "task": "mqar",
        **extra,
    }


def make_run(
    root: Path,
    name: str,
    config: dict,
    summary: dict | str | None,
    final_accuracy: float = 0.5,
) -> Path:
    """A run dir with config.json, an eval curve rising to `final_accuracy`, and summary."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config))
    lines = []
    for step in (25, 50, 75, 100):
        lines.append({"step": step, "wall_time_s": step / 10, "train/loss": 1.0 / step})
        lines.append({"step": step, "wall_time_s": step / 10,
                      "eval/accuracy": final_accuracy * step / 100, "eval/loss": 1.0})
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"step": 125, "eval/acc'
    (run / "metrics.jsonl").write_text(text)
    if isinstance(summary, dict):
        (run / "summary.json").write_text(json.dumps(summary))
    elif isinstance(summary, str):
        (run / "summary.json").write_text(summary)
    return run


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 variants x 2-3 seeds done, plus failed, running and half-written runs, nested."""
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"runs": []}))
    for attention, accuracies in ACCURACY.items():
        for seed, (acc, loss) in enumerate(zip(accuracies, LOSS[attention], strict=True)):
            name = f"{attention}/seed{seed}"
            summary = _summary(
                "done",
                attention=attention,
                num_params=PARAMS[attention],
                steps_per_second=10.0 + seed,
                final_metrics={"eval/accuracy": acc, "eval/loss": loss, "train/loss": 0.1},
            )
            make_run(root, name, _config(attention, seed, workdir=str(root / name)), summary, acc)
    failed = _summary("failed", reason="non-finite loss nan at step 37", step=37)
    make_run(root, "failed/seed9", _config("softmax", 9), failed)
    make_run(root, "running/seed8", _config("local", 8), _summary("running", step=50))
    make_run(root, "broken/seed7", _config("softmax", 7), '{"status": "done", "final_met')
    return root


def test_load_runs_one_row_per_run_dir(sweep: Path):
    nested = sweep / "local" / "seed0" / "checkpoints" / "100"
    nested.mkdir(parents=True)
    (nested / "config.json").write_text("{}")
    df = compare.load_runs([sweep])
    assert len(df) == 8
    assert sorted(df["status"].value_counts().items()) == [
        ("done", 5), ("failed", 1), ("invalid", 1), ("running", 1)]
    for column in ("run_dir", "reason", "config.model.attention", "config.seed", "num_params",
                   "steps_per_second", "tokens_per_second", "step", "eval/accuracy"):
        assert column in df.columns, column
    assert set(df["config.model.attention"]) == {"softmax", "local"}
    assert df["config.optimizer.betas"].iloc[0] == "[0.9, 0.98]"  # lists stay hashable
    broken = df[df["status"] == "invalid"].iloc[0]
    assert "summary.json" in broken["reason"] and broken["run_dir"].endswith("seed7")
    # A checkpoint folder inside a run dir is not searched; a run dir given directly works.
    assert len(compare.load_runs(sweep / "local" / "seed0")) == 1


def test_missing_or_non_object_json_is_invalid(tmp_path: Path):
    make_run(tmp_path, "no_summary", _config("softmax", 0), None)
    make_run(tmp_path, "list_summary", _config("softmax", 0), "[1, 2]")
    bad_config = make_run(tmp_path, "bad_config", {}, _summary("done", final_metrics={}))
    (bad_config / "config.json").write_text("{not json")
    make_run(tmp_path, "odd_status", _config("softmax", 0), _summary("exploded"))
    df = compare.load_runs([tmp_path]).set_index(
        pd.Index([Path(p).name for p in compare.load_runs([tmp_path])["run_dir"]]))
    assert (df["status"] == "invalid").all()
    assert "missing summary.json" in df.loc["no_summary", "reason"]
    assert "not a JSON object" in df.loc["list_summary", "reason"]
    assert "malformed config.json" in df.loc["bad_config", "reason"]
    assert "unknown status" in df.loc["odd_status", "reason"]


def test_summarize_mean_std_n_of_done_runs_only(sweep: Path):
    summary = compare.summarize(compare.load_runs([sweep])).set_index("label")
    assert sorted(summary.index) == ["attention=local", "attention=softmax"]
    soft, local = summary.loc["attention=softmax"], summary.loc["attention=local"]
    assert soft["n"] == 3 and local["n"] == 2  # failed/running/invalid softmax runs left out
    assert soft["eval/accuracy_mean"] == pytest.approx(0.93)
    assert soft["eval/accuracy_std"] == pytest.approx(statistics.stdev([0.90, 0.92, 0.97]))
    assert local["eval/accuracy_std"] == pytest.approx(0.06 / math.sqrt(2))
    assert local["eval/loss_mean"] == pytest.approx(0.45)
    assert soft["num_params"] == 1000 and local["steps_per_second"] == pytest.approx(10.5)
    assert soft["seeds"] == "0 1 2"
    # Default metrics: eval/* only, eval/accuracy first; sorted best first.
    assert [c for c in summary.columns if c.endswith("_mean")] == [
        "eval/accuracy_mean", "eval/loss_mean"]
    assert list(summary.index) == ["attention=softmax", "attention=local"]


def test_summarize_single_seed_has_no_std_and_loss_sorts_ascending(sweep: Path):
    df = compare.load_runs([sweep])
    df = df[~df["run_dir"].str.contains("seed1|seed2")]
    summary = compare.summarize(df, ["eval/loss"])
    assert list(summary["n"]) == [1, 1]
    assert summary["eval/loss_std"].isna().all()
    assert list(summary["eval/loss_mean"]) == [0.30, 0.50]
    assert "±" not in compare.markdown_table(summary).splitlines()[2]


def test_labels_name_the_settings_that_tell_groups_apart(sweep: Path):
    summary = _summary("done", final_metrics={"eval/accuracy": 0.1})
    make_run(sweep, "local4/seed0", _config("local", 0, window=4), summary)
    labels = set(compare.summarize(compare.load_runs([sweep]))["label"])
    # window_size differs between local groups; softmax's own `implementation` never differs.
    assert labels == {"attention=softmax", "attention=local window_size=8",
                      "attention=local window_size=4"}


def test_labels_use_a_key_only_some_groups_have_when_needed(tmp_path: Path):
    summary = _summary("done", final_metrics={"eval/accuracy": 0.1})
    extra = _config("softmax", 0)
    extra["model"]["attention_kwargs"]["scale"] = 2.0
    make_run(tmp_path, "a", _config("softmax", 0), summary)
    make_run(tmp_path, "b", extra, summary)
    labels = compare.summarize(compare.load_runs([tmp_path]))["label"]
    assert sorted(labels) == ["scale=2", "softmax"]


def test_labels_fall_back_to_attention_name(tmp_path: Path):
    summary = _summary("done", final_metrics={"eval/accuracy": 0.5})
    for seed in range(2):
        config = {**_config("softmax", seed, workdir=f"/w/{seed}"), "progress_bar": seed == 0}
        make_run(tmp_path, f"s{seed}", config, summary)
    result = compare.summarize(compare.load_runs([tmp_path]))
    assert list(result["label"]) == ["softmax"] and list(result["n"]) == [2]


def test_markdown_table_and_not_done_sections(sweep: Path):
    df = compare.load_runs([sweep])
    text = compare.markdown_table(compare.summarize(df), df)
    header, _, first, second = text.splitlines()[:4]
    assert header == ("| variant | eval/accuracy | eval/loss | 95% CI | n | params | tokens/s "
                      "| ⚠ |")
    assert first == ("| attention=softmax | 0.930 ± 0.036 | 0.250 ± 0.050 | [0.840, 1.000] | 3 "
                     "| 1,000 | 640 | 3/5 seeds |")  # one failed, one half-written
    assert second.startswith("| attention=local | 0.830 ± 0.042 | 0.450 ± 0.071 | [0.449, 1.000]")
    assert second.endswith("| 2/3 seeds |")  # one local run is still running
    assert "Student-t interval" in text  # the legend under the table
    not_done = text.split("## Runs not in the table")[1]
    assert "### running (1)" in not_done and "### failed (1)" in not_done
    assert "non-finite loss nan at step 37" in not_done
    assert "### invalid (1)" in not_done and "broken" in not_done
    assert "preempted" not in not_done


def test_one_table_per_task(tmp_path: Path):
    for task, acc in (("mqar", 0.9), ("listops", 0.4)):
        for attention in ("softmax", "local"):
            summary = _summary("done", task=task, final_metrics={"eval/accuracy": acc})
            make_run(tmp_path, f"{task}/{attention}", _config(attention, 0, task), summary)
    text = compare.markdown_table(compare.summarize(compare.load_runs([tmp_path])))
    assert text.index("### Task: listops") < text.index("### Task: mqar")
    assert text.count("| variant |") == 2
    assert "name=" not in text  # the task is the section, not part of the label


def test_read_curve_skips_half_written_lines(sweep: Path):
    curve = read_curve(sweep / "softmax" / "seed0", "eval/accuracy")
    assert list(curve.index) == [25, 50, 75, 100]
    assert curve.iloc[-1] == pytest.approx(0.90)
    assert read_curve(sweep / "nowhere", "eval/accuracy").empty


def test_plot_curves_writes_png(sweep: Path, tmp_path: Path):
    path = compare.plot_curves(compare.load_runs([sweep]), "eval/accuracy", tmp_path / "c.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
    assert compare.plot_curves(compare.load_runs([sweep]), "eval/nope", tmp_path / "x.png") is None


def test_write_report_files(sweep: Path, tmp_path: Path):
    out = tmp_path / "out"
    table, report = compare.write_report([sweep], out)
    assert report == out / "report.md" and "0.930 ± 0.036" in table
    text = report.read_text()
    assert "](curves_eval_accuracy.png)" in text and "](bars_eval_accuracy.png)" in text
    assert "## Runs not in the table" in text and "## Run directories" in text
    for name in ("report.md", "report.html", "results.csv", "runs.csv",
                 "curves_eval_accuracy.png", "bars_eval_accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 8 and "label" in runs.columns
    results = pd.read_csv(out / "results.csv")
    assert list(results["label"]) == ["attention=softmax", "attention=local"]
    assert results["eval/accuracy_ci"].iloc[0] == pytest.approx(
        4.302652729749464 * statistics.stdev([0.90, 0.92, 0.97]) / math.sqrt(3))
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temp files left


def test_find_run_dirs_dedupes_and_is_fast(tmp_path: Path):
    for i in range(300):
        make_run(tmp_path, f"r{i:03d}", _config("softmax", i), _summary("running"))
    assert len(find_run_dirs([tmp_path, tmp_path / "r000"])) == 300
    assert len(compare.load_runs([tmp_path])) == 300


def test_cli_writes_into_sweep_dir(sweep: Path, capsys):
    assert compare.main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| attention=softmax |" in out and f"report: {sweep / 'report.md'}" in out
    assert (sweep / "results.csv").exists()


def test_cli_errors(tmp_path: Path, capsys):
    assert compare.main([str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert compare.main([str(tmp_path)]) == 2
    assert "no run directories" in capsys.readouterr().err


def test_cli_unknown_metric(sweep: Path, tmp_path: Path, capsys):
    assert compare.main([str(sweep), "--out", str(tmp_path / "o"), "--metric", "eval/acc"]) == 2
    assert "unknown metric 'eval/acc'" in capsys.readouterr().err


def test_python_dash_m(sweep: Path, tmp_path: Path):
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "attnjax.compare", str(sweep), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.md").exists() and "| attention=softmax |" in proc.stdout


# ---------------------------------------------------------------- a study with a protocol

# (attention, learning_rate) -> per-seed (eval/accuracy, test/accuracy). Selecting on
# validation picks lr=0.001 for both variants; selecting on test would pick lr=0.003.
STUDY = {
    ("softmax", 0.001): [(0.95, 0.80), (0.96, 0.82), (0.94, 0.81)],
    ("softmax", 0.003): [(0.90, 0.99), (0.91, 0.98), (0.89, 0.97)],
    ("linear", 0.001): [(0.70, 0.60), (0.72, 0.62), (0.71, 0.61)],
    ("linear", 0.003): [(0.60, 0.90), (0.61, 0.91), (0.62, 0.92)],
}


def _study_config(attention: str, seed: int, lr: float, d_model: int = 64, seq_len: int = 64):
    return {"seed": seed, "learning_rate": lr, "workdir": "",
            "model": {"attention": attention, "attention_kwargs": {}, "d_model": d_model},
            "task": {"name": "mqar", "seq_len": seq_len}}


def _study_summary(attention: str, final: dict, num_params: int = 1000, **extra) -> dict:
    return _summary("done", attention=attention, num_params=num_params, final_metrics=final,
                    flops_per_token=2.5e6, state_size=4096 if attention == "linear" else None,
                    peak_memory_bytes=3 * 2**20, peak_memory_kind="host_rss", **extra)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for (attention, lr), seeds in STUDY.items():
        for seed, (val, test) in enumerate(seeds):
            final = {"eval/accuracy": val, "test/accuracy": test, "eval/loss": 1 - val,
                     "test/loss": 1 - test, "eval_len128/accuracy": val / 2,
                     "eval_len256/accuracy": val / 4, "test_len128/accuracy": test / 2,
                     "test_len256/accuracy": test / 4}
            make_run(root, f"{attention}_lr{lr}_s{seed}", _study_config(attention, seed, lr),
                     _study_summary(attention, final), val)
    return root


class NoTestColumns(pd.DataFrame):
    """A frame whose test/ columns cannot be read: selection must never touch them."""

    def __getitem__(self, key):
        keys = key if isinstance(key, list) else [key]
        bad = [k for k in keys if isinstance(k, str) and k.startswith("test")]
        assert not bad, f"selection read {bad}"
        return super().__getitem__(key)


def test_selection_on_validation_reports_test(study: Path):
    analysis = compare.analyze(compare.load_runs([study]), select_by="eval/accuracy",
                               over=["learning_rate"])
    table = analysis.table.set_index("label")
    assert list(table.index) == ["attention=softmax", "attention=linear"]
    assert analysis.metrics[0] == "test/accuracy"  # reported on test, selected on eval
    assert set(table["selected"]) == {"learning_rate=0.001"}
    assert table.loc["attention=softmax", "test/accuracy_mean"] == pytest.approx(0.81)
    assert table.loc["attention=softmax", "selection_mean"] == pytest.approx(0.95)
    assert table.loc["attention=linear", "test/accuracy_mean"] == pytest.approx(0.61)
    chosen = analysis.candidates[analysis.candidates["chosen"]]
    assert list(chosen["config.learning_rate"]) == [0.001, 0.001] and len(analysis.candidates) == 4
    text = "\n".join(report.protocol(analysis))
    assert "`learning_rate`" in text and "highest mean `eval/accuracy`" in text
    assert "test metrics were never read to select" in text


def test_selection_never_reads_test_metrics(study: Path):
    runs = compare.add_groups(compare.load_runs([study]), exclude=["config.learning_rate"])
    runs["task"] = compare.task_of(runs)
    done = NoTestColumns(runs[runs["status"] == "done"])
    index, candidates = compare.select_hyperparameters(done, "eval/accuracy",
                                                       ["config.learning_rate"])
    assert len(index) == 6 and candidates["chosen"].sum() == 2
    # Scrambling every test metric changes nothing that was selected.
    df = compare.load_runs([study])
    scrambled = df.copy()
    for column in [c for c in df.columns if c.startswith("test")]:
        scrambled[column] = scrambled[column].sample(frac=1, random_state=0).to_numpy() * 7
    picks = [compare.analyze(d, select_by="eval/accuracy", over=["learning_rate"])
             .candidates["chosen"].tolist() for d in (df, scrambled)]
    assert picks[0] == picks[1]


def test_selecting_on_test_is_refused(study: Path, tmp_path: Path, capsys):
    df = compare.load_runs([study])
    with pytest.raises(ValueError, match="never test"):
        compare.analyze(df, select_by="test/accuracy", over=["learning_rate"])
    args = [str(study), "--out", str(tmp_path / "o"), "--over", "learning_rate"]
    assert compare.main([*args, "--select-by", "test/accuracy"]) == 2
    assert "'eval/accuracy'" in capsys.readouterr().err
    assert compare.main([*args, "--select-by", "eval/acc"]) == 2
    assert "eval/accuracy" in capsys.readouterr().err  # names the available eval metrics


def test_selection_without_test_metrics_says_optimistic(sweep: Path):
    analysis = compare.analyze(compare.load_runs([sweep]), over=["model.num_layers"])
    assert analysis.select_by == "eval/accuracy" and analysis.metrics[0] == "eval/accuracy"
    assert any("optimistic" in note for note in analysis.notes)


def test_significance_against_baseline_with_holm(study: Path):
    df = compare.load_runs([study])
    analysis = compare.analyze(df, ["test/accuracy"], baseline="softmax")
    table = analysis.table.set_index("label")
    # No selection: four rows (attention x learning_rate). Both softmax rows are baselines;
    # each linear row is tested against the softmax row with its learning rate, and Holm
    # corrects over the two tests of the task.
    base = table[table["is_baseline"]]
    assert len(base) == 2 and base["test/accuracy_p"].isna().all()
    row = table.loc["attention=linear learning_rate=0.001"]
    assert row["baseline"] == "attention=softmax learning_rate=0.001"
    soft = [t for _, t in STUDY[("softmax", 0.001)]]
    lin = [t for _, t in STUDY[("linear", 0.001)]]
    other = stats.welch_test([t for _, t in STUDY[("linear", 0.003)]],
                             [t for _, t in STUDY[("softmax", 0.003)]]).p_value
    p = stats.welch_test(lin, soft).p_value
    assert row["test/accuracy_p"] == pytest.approx(p)
    assert row["test/accuracy_p_holm"] == pytest.approx(stats.holm([p, other])[0])
    assert row["test/accuracy_stars"] == stats.stars(row["test/accuracy_p_holm"])
    assert row["test/accuracy_stars"] == "***"
    text = compare.markdown_table(analysis.table)
    assert "(baseline)" in text and "***" in text and "p (Holm)" in text
    boot = compare.analyze(df, ["test/accuracy"], baseline="softmax", test="bootstrap")
    assert boot.table["test/accuracy_p"].notna().sum() == 2


def test_unknown_baseline_and_keys_name_the_choices(study: Path, tmp_path: Path, capsys):
    out = ["--out", str(tmp_path / "o")]
    assert compare.main([str(study), *out, "--baseline", "softmx"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'softmax'" in err and "attention=linear learning_rate=0.001" in err
    assert compare.main([str(study), *out, "--over", "learning_rat"]) == 2
    assert "learning_rate" in capsys.readouterr().err  # the swept keys
    assert compare.main([str(study), *out, "--metric", "test/acc"]) == 2
    assert "test/accuracy" in capsys.readouterr().err
    assert compare.main([str(study), *out, "--x", "model.nope"]) == 2
    assert "unknown --x config key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # bad input: nothing written


def _fairness_runs(root: Path, other_params: int) -> pd.DataFrame:
    for attention, params in (("softmax", 1000), ("linear", other_params)):
        for seed in range(2):
            final = {"eval/accuracy": 0.90 + 0.01 * seed}  # well above chance (1/8)
            make_run(root, f"{attention}{seed}", _study_config(attention, seed, 1e-3),
                     _study_summary(attention, final, num_params=params))
    return compare.load_runs([root])


def test_fairness_flags_unequal_parameters(tmp_path: Path):
    flagged = compare.summarize(_fairness_runs(tmp_path / "a", 1370), baseline="softmax")
    assert dict(zip(flagged["label"], flagged["flags"], strict=True)) == {
        "attention=softmax": "", "attention=linear": "params +37% vs baseline"}
    text = compare.markdown_table(flagged)
    assert "params +37% vs baseline" in text and "the LRA rule" in text
    equal = compare.summarize(_fairness_runs(tmp_path / "b", 1050), baseline="softmax")
    assert list(equal["flags"]) == ["", ""]  # 5% is within the 10% rule


def test_fairness_flags_missing_seeds(tmp_path: Path):
    df = _fairness_runs(tmp_path, 1000)
    make_run(tmp_path, "linear2", _study_config("linear", 2, 1e-3),
             _summary("preempted", reason="stopped at step 50", step=50))
    table = compare.summarize(compare.load_runs([tmp_path]), baseline="softmax")
    assert dict(zip(table["label"], table["flags"], strict=True)) == {
        "attention=softmax": "", "attention=linear": "2/3 seeds"}
    assert len(df) == 4


def test_grid_edge_flag(tmp_path: Path):
    for lr, acc in ((1e-3, 0.5), (3e-3, 0.6), (1e-2, 0.7)):
        make_run(tmp_path, f"lr{lr}", _study_config("softmax", 0, lr),
                 _study_summary("softmax", {"eval/accuracy": acc}))
    table = compare.summarize(compare.load_runs([tmp_path]), over=["learning_rate"])
    assert table["selected"].iloc[0] == "learning_rate=0.01"
    assert table["flags"].iloc[0] == "best learning_rate at grid edge"


def _benchmark(root: Path) -> Path:
    rows = [{"attention": a, "seq_len": L, "batch_size": 8, "d_model": 64, "num_heads": 2,
             "causal": True, "ms_per_step": L / 100 * k, "tokens_per_second": 8 * L / (L * k),
             "peak_memory_bytes": L * L * k, "compiled_temp_bytes": None, "status": "ok",
             "reason": None} for a, k in (("softmax", 2), ("linear", 1)) for L in (64, 128, 256)]
    rows.append({**rows[-1], "seq_len": 4096, "status": "oom", "reason": "RESOURCE_EXHAUSTED",
                 "tokens_per_second": None, "peak_memory_bytes": None})
    (root / "bench").mkdir(parents=True)
    path = root / "bench" / "benchmark.json"
    path.write_text(json.dumps({"kind": "attention", "device": "cpu", "date": "2026-01-01",
                                "versions": {}, "command": "attnjax bench attention",
                                "rows": rows}))
    return path


def test_full_report_plots_html_latex(study: Path, tmp_path: Path):
    for d_model in (32, 128):  # a swept axis for the metric-vs-d_model plot
        for seed in range(2):
            config = _study_config("softmax", seed, 0.001, d_model=d_model)
            final = {"eval/accuracy": d_model / 200, "test/accuracy": d_model / 210}
            make_run(study, f"d{d_model}_{seed}", config, _study_summary("softmax", final))
    make_run(study, "half_written", _study_config("linear", 9, 0.001), '{"status": "do')
    _benchmark(study)
    out = tmp_path / "report"
    code = compare.main([str(study), "--out", str(out), "--select-by", "eval/accuracy",
                         "--over", "learning_rate", "--baseline", "softmax", "--latex"])
    assert code == 0
    for name in ("report.md", "report.html", "results.csv", "runs.csv", "results.tex",
                 "curves_eval_accuracy.png", "bars_test_accuracy.png", "swept_test_accuracy.png",
                 "lengths_test_accuracy.png", "benchmark_0.png"):
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    md = (out / "report.md").read_text()
    assert "## Protocol" in md and "## Selection" in md and "## Benchmarks" in md
    assert "](swept_test_accuracy.png)" in md and "test/accuracy vs model.d_model" in md
    assert "linear L=4096: oom (RESOURCE_EXHAUSTED)" in md
    assert "3 MiB†" in md and "† host RSS" in md and "4.1k" in md  # budgets, state size
    assert "### invalid (1)" in md and "half_written" in md and "malformed summary.json" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and 'src="curves' not in page
    assert "<table>" in page and "<b>Selection.</b>" in page
    tex = (out / "results.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "test/accuracy" in tex
    assert "attention=softmax d\\_model=64" in tex or "d\\_model" in tex
    results = pd.read_csv(out / "results.csv")
    assert {"test/accuracy_p", "test/accuracy_p_holm", "flags", "selected"} <= set(results)


def test_swept_axis_auto_detected_and_by_panels(tmp_path: Path):
    for d_model in (16, 32, 64):
        for seq_len in (64, 128):
            for attention in ("softmax", "linear"):
                final = {"eval/accuracy": d_model / 100 - seq_len / 1000}
                make_run(tmp_path, f"{attention}_{d_model}_{seq_len}",
                         _study_config(attention, 0, 1e-3, d_model, seq_len),
                         _study_summary(attention, final))
    analysis = compare.analyze(compare.load_runs([tmp_path]))
    assert figures.swept_axes(analysis) == ("config.model.d_model", "config.task.seq_len")
    assert figures.swept_axes(analysis, "seq_len", None) == ("config.task.seq_len", None)
    path = plots.plot_swept(analysis.table, "eval/accuracy", "config.model.d_model",
                            "config.task.seq_len", tmp_path / "s.png")
    assert path is not None and path.stat().st_size > 0


def test_benchmarks_alone_and_broken(tmp_path: Path):
    _benchmark(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "benchmark.json").write_text("{")
    _, path = compare.write_report([tmp_path], tmp_path / "out")
    text = path.read_text()
    assert "benchmark_0.png" in text and "Unreadable benchmark files" in text
    assert compare.main([str(tmp_path / "bad"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()  # nothing readable at all, nothing written


def test_heatmaps_embedded_and_variants_without_weights_listed(study: Path, tmp_path: Path,
                                                               monkeypatch):
    calls = []

    def render(run_dir, out_dir, *, example=0):
        calls.append((Path(run_dir).name, Path(out_dir).name, example))
        if "linear" in str(run_dir):
            return {"attention": "linear", "images": [], "skipped": "linear attention never "
                    "forms the L x L weights"}
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True)
        png = plots._figure(1)[0]
        path = out_dir / "layer0_head0.png"
        png.savefig(path)
        return {"attention": "softmax", "images": [str(path)], "skipped": None}

    fake = types.ModuleType("attnjax.heatmaps")
    fake.render = render
    monkeypatch.setitem(sys.modules, "attnjax.heatmaps", fake)
    monkeypatch.setattr(attnjax, "heatmaps", fake, raising=False)
    out = tmp_path / "out"
    assert compare.main([str(study), "--out", str(out), "--over", "learning_rate",
                         "--heatmaps"]) == 0
    # The lowest seed of each selected group, rendered into heatmaps/<slug>/.
    assert sorted(calls) == [("linear_lr0.001_s0", "mqar-attention-linear", 0),
                             ("softmax_lr0.001_s0", "mqar-attention-softmax", 0)]
    md = (out / "report.md").read_text()
    assert "## Attention heatmaps" in md and "no explicit attention weights" in md
    assert "(heatmaps/mqar-attention-softmax/layer0_head0.png)" in md
    assert "data:image/png;base64" in (out / "report.html").read_text()


def test_thousand_runs_table_never_reads_metrics_jsonl(tmp_path: Path, monkeypatch):
    calls = []
    monkeypatch.setattr(plots, "read_curve", lambda *a: calls.append(a))
    monkeypatch.setattr(runs, "read_curve", lambda *a: calls.append(a))
    for i in range(1000):
        run = tmp_path / f"r{i:04d}"
        (run / "metrics.jsonl").mkdir(parents=True)  # reading it would raise
        attention = ("softmax", "linear", "local", "gla")[i % 4]
        config = _study_config(attention, i // 40, (1e-3, 3e-3)[i // 4 % 2], 32 * (1 + i // 8 % 5))
        (run / "config.json").write_text(json.dumps(config))
        final = {"eval/accuracy": (i % 97) / 100, "test/accuracy": (i % 89) / 100}
        (run / "summary.json").write_text(json.dumps(_study_summary(attention, final)))
    df = compare.load_runs([tmp_path])
    analysis = compare.analyze(df, select_by="eval/accuracy", over=["learning_rate"],
                               baseline="softmax")
    text = compare.markdown_table(analysis.table, analysis.runs)
    assert len(df) == 1000 and len(analysis.table) == 20 and set(analysis.table["n"]) == {25}
    assert text.count("(baseline)") == 5 and not calls


def test_sweep_with_no_finished_run_is_reported(tmp_path: Path):
    make_run(tmp_path, "a", _config("softmax", 0), _summary("failed", reason="boom", step=3))
    make_run(tmp_path, "b", _config("local", 0), _summary("preempted", reason="stopped at step 9"))
    make_run(tmp_path, "c", _config("local", 1), "")
    table, path = compare.write_report([tmp_path], tmp_path / "out")
    assert "No finished runs yet." in table and "### preempted (1)" in table
    text = path.read_text()
    assert "boom" in text and "stopped at step 9" in text and "### invalid (1)" in text
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


def test_params_flag_without_baseline_compares_within_the_same_settings(tmp_path: Path):
    for d_model in (32, 128):  # 4x the parameters at d_model=128: not a fairness problem
        for attention, extra in (("softmax", 0), ("linear", 0), ("gla", 50 * d_model)):
            make_run(tmp_path, f"{attention}{d_model}", _study_config(attention, 0, 1e-3, d_model),
                     _study_summary(attention, {"eval/accuracy": 0.5},
                                    num_params=100 * d_model + extra))
    table = compare.summarize(compare.load_runs([tmp_path]))
    flags = dict(zip(table["label"], table["flags"], strict=True))
    assert flags["attention=gla d_model=32"] == "params +50% vs median"
    assert flags["attention=softmax d_model=128"] == ""
    assert list(table["label"][:3].str.endswith("d_model=32")) == [True] * 3  # sorted by setting
