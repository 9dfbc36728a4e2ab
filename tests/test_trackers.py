"""Trackers: config checks, old run dirs, and a W&B run in offline mode (no network) that holds
what metrics.jsonl holds and keeps its id when the run resumes."""

from __future__ import annotations

import json
import math
import re
import struct
import sys

import ml_collections
import pytest

from attnjax import config as config_lib
from attnjax import trackers, train
from attnjax.registry import ConfigError
from attnjax.rundir import MANIFEST, RunDir
from tests.conftest import tiny_config


def _with_trackers(names, **logging):
    c = tiny_config()
    c.logging = ml_collections.ConfigDict({**c.logging.to_dict(), "trackers": names, **logging})
    return c


@pytest.mark.parametrize("names, message", [
    (("jsonl", "wnadb"), "unknown logging.trackers entry 'wnadb'; did you mean 'wandb'? "
                         "Known: jsonl, tensorboard, wandb"),
    (("tensorboard",), "lacks 'jsonl': metrics.jsonl is the run's record"),
])
def test_bad_trackers_are_config_errors(names, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_lib.resolve(_with_trackers(names))


def test_trackers_from_the_command_line():
    assert trackers.check("jsonl,wandb") == ("jsonl", "wandb")
    assert trackers.check(("jsonl, tensorboard", "jsonl")) == ("jsonl", "tensorboard")


def test_bad_wandb_mode_names_the_modes():
    message = "unknown logging.wandb_mode 'offlne'; did you mean 'offline'?"
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_lib.resolve(_with_trackers(("jsonl",), wandb_mode="offlne"))


def test_logging_is_operational_and_old_run_dirs_still_match(tmp_path):
    """A config.json written before `logging` existed, or with other trackers, is the same
    run: a resume may change how it is logged."""
    run = RunDir(tmp_path)
    resolved = config_lib.resolve(tiny_config())
    old = json.loads(config_lib.to_json(resolved))
    del old["logging"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    run.write_config(config_lib.to_json(resolved), normalize=config_lib.normalize_json)
    other = config_lib.resolve(_with_trackers(("jsonl", "wandb"), wandb_project="x"))
    run.write_config(config_lib.to_json(other), normalize=config_lib.normalize_json)


def test_wandb_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    config = config_lib.resolve(_with_trackers(("jsonl", "wandb")))
    with pytest.raises(ConfigError, match=r"pip install 'attnjax\[wandb\]'"):
        trackers.open_trackers(config, RunDir(tmp_path))


def test_only_process_0_logs(tmp_path):
    config = config_lib.resolve(tiny_config())
    others = trackers.open_trackers(config, RunDir(tmp_path), enabled=False)
    others.log(1, {"train/loss": 1.0})
    others.close()
    assert not any(tmp_path.iterdir())


def test_wandb_run_id_is_stable_and_valid(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / MANIFEST).write_text("{}")
    assert trackers.wandb_run_id(RunDir(tmp_path / "sweep" / "attention-a,b_seed-0")) == (
        "sweep.attention-a-b_seed-0")
    assert trackers.wandb_run_id(RunDir(tmp_path / "lone")) == "lone"
    long = trackers.wandb_run_id(RunDir(tmp_path / ("x" * 100)))
    assert len(long) == 64 and long == trackers.wandb_run_id(RunDir(tmp_path / ("x" * 100)))


# ---------------------------------------------------------------- W&B offline, read back


def _wandb_records(path):
    """The protobuf records of an offline run's .wandb file (a LevelDB-style log of 32 KiB
    blocks after a 7-byte ':W&B' header); wandb no longer ships a Python reader."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _offline_runs(wandb_dir):
    """[(run id, group, name, config, {step: {key: value}})] of each offline W&B run, oldest
    first."""
    out = []
    for path in sorted(wandb_dir.glob("wandb/offline-run-*/*.wandb"),
                       key=lambda p: p.stat().st_mtime):
        run, history = None, {}
        for r in _wandb_records(path):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run = r.run
            elif kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                       for i in r.history.item}
                history.setdefault(row.pop("_step"), {}).update(
                    {k: v for k, v in row.items() if not k.startswith("_")})
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        out.append((run.run_id, run.run_group, run.display_name, config, history))
    return out


def _close(a, b):
    return (isinstance(b, str) and str(a) == b) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_wandb_offline_holds_the_metrics_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"),
                       "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                       "WANDB_DISABLE_GIT": "true"}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "wb").mkdir()
    sweep = tmp_path / "study"
    sweep.mkdir()
    (sweep / MANIFEST).write_text("{}")  # a sweep dir: the W&B group is its name
    run = RunDir(sweep / "seed-0")
    config = _with_trackers(("jsonl", "wandb"))
    first = train.train_and_evaluate(config, run, step_callback=lambda step: step == 10)
    assert first["status"] == "preempted"
    assert train.train_and_evaluate(config, run)["status"] == "done"

    runs = _offline_runs(tmp_path / "wb")
    assert len(runs) == 2
    assert {r[:3] for r in runs} == {("study.seed-0", "study", "seed-0")}
    assert runs[0][3]["model.attention"] == "softmax" and runs[0][3]["logging.trackers"] == [
        "jsonl", "wandb"]
    history = {}
    for *_, h in runs:
        for step, row in h.items():
            history.setdefault(step, {}).update(row)
    logged = {}  # metrics.jsonl folded as W&B folds a step's rows: the last value wins
    for record in run.read_metrics():
        logged.setdefault(record["step"], {}).update(
            {k: v for k, v in record.items() if k != "step"})
    assert set(logged) == set(history) == {5, 10, 15, 20}
    for step, row in logged.items():
        assert set(row) == set(history[step]), step
        for key, value in row.items():
            assert _close(history[step][key], value), (step, key, history[step][key], value)
    assert not list(run.path.glob("events.out.tfevents.*"))  # tensorboard was not chosen
