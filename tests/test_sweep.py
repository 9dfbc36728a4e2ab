"""Sweeps: every run trained once, re-runs train nothing, bad studies write nothing."""

from __future__ import annotations

import json
import textwrap

import pytest

from attnjax import sweep, train
from attnjax.registry import ConfigError
from tests.conftest import documented_args, run_cli

EXPERIMENT = """
from tests.conftest import tiny_config

def get_config():
    return tiny_config(num_train_steps=6, eval_every_steps=3, checkpoint_every_steps=3)

def sweep():
    return [{{"model.attention": a, "seed": s}} for a in ("softmax", "linear") for s in (0, 1)]
"""


def _write(tmp_path, body, name="study.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_sweep_trains_each_run_once_and_rerun_trains_nothing(tmp_path):
    path = _write(tmp_path, EXPERIMENT.format())
    out = tmp_path / "out"
    results = sweep.run_sweep(path, out, log=lambda s: None)
    names = [r.name for r, _ in results]
    assert names == ["attention-softmax_seed-0", "attention-softmax_seed-1",
                     "attention-linear_seed-0", "attention-linear_seed-1"]
    assert all(s["status"] == "done" for _, s in results)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["done"] * 4
    assert manifest["runs"][2]["overrides"] == {"model.attention": "linear", "seed": 0}

    calls = []
    again = sweep.run_sweep(path, out, train_fn=lambda c, d: calls.append(d), log=lambda s: None)
    assert calls == [] and all(s["status"] == "done" for _, s in again)


def test_sweep_resumes_an_interrupted_run(tmp_path):
    path = _write(tmp_path, EXPERIMENT.format())
    out = tmp_path / "out"
    runs = sweep.expand(sweep.load_experiment(path))
    # preempt the first run half way, as a scheduler would
    train.train_and_evaluate(runs[0].config, out / runs[0].name, step_callback=lambda s: s == 3)
    seen = []

    def spy(config, workdir):
        seen.append(workdir.name)
        return train.train_and_evaluate(config, workdir)

    results = sweep.run_sweep(path, out, train_fn=spy, log=lambda s: None)
    assert seen == [r.name for r in runs]
    assert all(s["status"] == "done" for _, s in results)
    lines = (out / runs[0].name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "eval/loss" in line] == [3, 6]


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    path = _write(tmp_path, EXPERIMENT.format())

    def flaky(config, workdir):
        if config.seed == 1:
            raise RuntimeError("boom")
        return {"status": "done"}

    results = sweep.run_sweep(path, tmp_path / "out", train_fn=flaky, log=lambda s: None)
    assert [s["status"] for _, s in results] == ["done", "failed", "done", "failed"]


@pytest.mark.parametrize("bad, message", [
    ('{"model.attention": "softmx"}', "did you mean 'softmax'"),
    ('{"task.name": "mqarr"}', "did you mean 'mqar'"),
    ('{"learning_rat": 0.1}', "did you mean 'learning_rate'"),
])
def test_bad_study_exits_nonzero_and_writes_nothing(tmp_path, bad, message):
    body = EXPERIMENT.format().replace(
        'return [{"model.attention": a, "seed": s}',
        f'return [{bad}] + [{{"model.attention": a, "seed": s}}')
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        sweep.run_sweep(path, tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()
    proc = run_cli("sweep", str(path), "--workdir", str(tmp_path / "cli"))
    assert proc.returncode == 2 and message in proc.stderr and "Known" in proc.stderr
    assert not (tmp_path / "cli").exists()


def test_experiment_file_problems_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        sweep.load_experiment(tmp_path / "missing.py")
    path = _write(tmp_path, "def get_config():\n    return None\n")
    with pytest.raises(ConfigError, match=r"must define sweep\(\)"):
        sweep.load_experiment(path)


def test_run_names_are_readable_and_unambiguous():
    keys = ["model.attention", "seed", "model.attention_kwargs.window_size"]
    assert sweep.run_name({"model.attention": "local", "seed": 0}, keys) == \
        "attention-local_seed-0"
    keys = ["model.dropout_rate", "task.dropout_rate"]
    assert sweep.run_name({"model.dropout_rate": 0.1}, keys) == "model.dropout_rate-0.1"


def test_long_run_names_are_cut_and_stay_unique():
    keys = [f"task.setting_number_{i}" for i in range(30)]
    long = {k: "a-long-value" for k in keys}
    other = {**long, keys[-1]: "another-value"}  # differs only past the cut
    a, b = sweep.run_name(long, keys), sweep.run_name(other, keys)
    assert len(a) == len(b) == sweep.MAX_NAME and a != b
    assert a.startswith("setting_number_0-a-long-value_")


def test_a_preempted_run_stops_the_sweep(tmp_path):
    path = _write(tmp_path, EXPERIMENT.format())
    calls = []

    def interrupted(config, workdir):
        calls.append(workdir.name)
        return {"status": "preempted"} if len(calls) == 2 else {"status": "done"}

    results = sweep.run_sweep(path, tmp_path / "out", train_fn=interrupted, log=lambda s: None)
    statuses = [s["status"] for _, s in results]  # every planned run, trained or not
    assert statuses == ["done", "preempted", "pending", "pending"] and len(calls) == 2


def _shipped_experiments():
    """Every experiment file, with each argument its docstring's Run: lines use."""
    from attnjax import REPO_ROOT

    out = []
    for path in sorted((REPO_ROOT / "experiments").glob("*.py")):
        out += [str(path)] + [f"{path}:{a}" for a in documented_args(path)]
    return out


@pytest.mark.parametrize("experiment", _shipped_experiments(),
                         ids=lambda p: p.rsplit("/", 1)[-1])
def test_every_shipped_experiment_expands_and_validates(experiment, tmp_path, monkeypatch):
    """Nothing rots: every run of every study in experiments/ resolves against the code. A
    study of local data takes the data path as its argument: without one it says so, and with
    fixture files it resolves (experiments/lra.py reads them from $ATTNJAX_LRA_DATA)."""
    from tests import data_fixtures

    monkeypatch.setenv("ATTNJAX_LRA_DATA", str(data_fixtures.lra_data(tmp_path)))
    try:
        runs = sweep.expand(sweep.load_experiment(experiment))
    except ConfigError as e:
        if "task.path" not in str(e) or ".py:" in experiment:
            raise
        name = sweep.load_experiment(experiment).get_config().task.name
        path = data_fixtures.settings_for(name, tmp_path)["path"]
        experiment = f"{experiment}:{path}"
        runs = sweep.expand(sweep.load_experiment(experiment))
    assert runs and len({r.name for r in runs}) == len(runs)
    text = sweep.split_arg(experiment)[0].read_text()
    assert "Run:" in text and "Cost:" in text  # each study documents its command and cost


def test_experiment_argument(tmp_path):
    path = tmp_path / "study.py"
    path.write_text(
        "from attnjax.config import load_config_file\n"
        "def get_config(arg=None):\n"
        "    if arg not in (None, 'small'):\n"
        "        raise ValueError(f'unknown argument {arg!r}; known: small')\n"
        "    return load_config_file('mqar', 'quickstart' if arg else None)\n"
        "def sweep(arg=None):\n"
        "    return [{'seed': s} for s in ((0,) if arg else (0, 1))]\n"
    )
    assert len(sweep.expand(sweep.load_experiment(path))) == 2
    small = sweep.expand(sweep.load_experiment(f"{path}:small"))
    assert len(small) == 1 and small[0].config.task.seq_len == 32
    assert sweep.default_workdir(f"{path}:small").name == "study-small"
    with pytest.raises(ConfigError, match="known: small"):
        sweep.expand(sweep.load_experiment(f"{path}:huge"))


def test_an_experiment_may_name_its_runs(tmp_path):
    path = tmp_path / "study.py"
    path.write_text(
        "from tests.conftest import tiny_config\n"
        "def get_config(arg=None):\n    return tiny_config()\n"
        "def sweep(arg=None):\n    return [{'seed': s} for s in (0, 1)]\n"
        "def run_name(overrides):\n    return f\"run{overrides['seed']}\" + (NAME_TAIL)\n"
        "NAME_TAIL = ''\n"
    )
    assert [r.name for r in sweep.expand(sweep.load_experiment(f"{path}:x"))] == ["run0", "run1"]
    path.write_text(path.read_text().replace("NAME_TAIL = ''", "NAME_TAIL = '/up'"))
    with pytest.raises(ConfigError, match="run_name\\(\\) must return a directory name"):
        sweep.expand(sweep.load_experiment(path))


def test_a_study_declares_how_compare_reads_it(tmp_path):
    body = EXPERIMENT.format().replace("():", "(arg=None):") + (
        "\ndef compare(arg=None):\n"
        "    return {'select_by': 'eval/accuracy', 'over': ['learning_rate'], 'x': 'seed'}\n")
    path = _write(tmp_path, body)
    sweep.plan(f"{path}:small", tmp_path / "out")  # with an argument too
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["compare"] == {"select_by": "eval/accuracy", "over": ["learning_rate"],
                                   "x": "seed"}
    sweep.write_manifest(tmp_path / "out")  # a worker's rebuild keeps them
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["compare"]
    from attnjax.compare.cli import study_settings

    assert study_settings([str(tmp_path / "out")])["x"] == "seed"
    assert study_settings([str(tmp_path / "out"), str(tmp_path)]) == {}  # several dirs: none


@pytest.mark.parametrize("returned, message", [
    ("{'selectby': 'eval/accuracy'}", "did you mean 'select_by'"),
    ("{'over': 3}", "must be a string or a list"),
    ("['x']", "must return a dict"),
])
def test_a_bad_compare_declaration_is_refused_before_anything_is_written(
        tmp_path, returned, message):
    path = _write(tmp_path, EXPERIMENT.format() + f"\ndef compare():\n    return {returned}\n")
    with pytest.raises(ConfigError, match=message):
        sweep.plan(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
