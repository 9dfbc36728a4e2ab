"""attnjax.compare on run dirs built by hand (docs/RUN_DIR.md); no training involved."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnjax import compare
from attnjax.rundirs import find_run_dirs, read_curve

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
    assert header == "| variant | eval/accuracy | eval/loss | n | params | steps/s |"
    assert first == "| attention=softmax | 0.930 ± 0.036 | 0.250 ± 0.050 | 3 | 1,000 | 11.0 |"
    assert second.startswith("| attention=local | 0.830 ± 0.042 |")
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
    assert "![eval/accuracy vs step](curves_eval_accuracy.png)" in text
    assert "## Runs not in the table" in text and "## Run directories" in text
    for name in ("report.md", "results.csv", "curves_eval_accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and "label" in results.columns
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
