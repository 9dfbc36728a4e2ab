"""experiments/lra.py: every argument plans (every run config resolves), with LRA's settings
per task, and the all-tasks study holds exactly each task's runs."""

from __future__ import annotations

import pytest

from attnjax import sweep
from attnjax.config import REPO_ROOT, flatten
from attnjax.registry import ConfigError
from attnjax.studies import lra_variants
from tests import data_fixtures

LRA = REPO_ROOT / "experiments" / "lra.py"
# arg -> (task, a few of LRA's settings for it)
EXPECTED = {
    "listops": ("listops", {"model.num_layers": 6, "model.d_model": 512, "batch_size": 32,
                            "task.seq_len": 2000}),
    "text": ("text_classification", {"model.d_model": 256, "model.mlp_dim": 1024,
                                     "num_train_steps": 20_000, "task.seq_len": 1000}),
    "image": ("image_classification", {"model.d_model": 32, "batch_size": 256,
                                       "num_train_steps": 35_000, "weight_decay": 0.0}),
    "pathfinder": ("pathfinder", {"model.d_model": 128, "batch_size": 512,
                                  "num_train_steps": 62_400, "task.image_size": 32}),
    "cpu": ("listops", {"model.d_model": 64, "task.seq_len": 128, "num_test_batches": 16}),
}


@pytest.fixture
def lra_data(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNJAX_LRA_DATA", str(data_fixtures.lra_data(tmp_path)))


def _plan(arg):
    return sweep.expand(sweep.load_experiment(f"{LRA}:{arg}" if arg else LRA),
                        devices_per_run=1)


@pytest.mark.parametrize("arg", list(EXPECTED))
def test_each_argument_plans_with_lras_settings(arg, lra_data):
    runs = _plan(arg)
    task, settings = EXPECTED[arg]
    variants = 11 * 2 if arg == "cpu" else len(lra_variants(8))  # :cpu: table 1's, 2 lrs
    assert len(runs) == variants * 3 and len({r.name for r in runs}) == len(runs)
    for run in runs:
        flat = flatten(run.config.to_dict())
        assert run.config.task.name == task and run.config.model.attention_dropout_rate == 0
        assert {k: flat[k] for k in settings} == settings, run.name


def test_the_default_plans_every_task_as_alone(lra_data):
    runs = _plan(None)
    alone = {f"{arg}_{r.name}": r.config.to_dict()
             for arg in ("listops", "text", "image", "pathfinder") for r in _plan(arg)}
    assert {r.name: r.config.to_dict() for r in runs} == alone


def test_data_tasks_say_where_their_files_go(monkeypatch):
    monkeypatch.delenv("ATTNJAX_LRA_DATA", raising=False)
    with pytest.raises(ConfigError, match="set ATTNJAX_LRA_DATA"):
        _plan("text")
