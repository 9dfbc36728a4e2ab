"""The train loop: it learns, resumes exactly, stops on NaN, and pmap matches one device."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from attnjax import steps, train
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir
from tests.conftest import run_python, tiny_config


def _final_params(workdir, config):
    """Params of the last checkpoint, as numpy."""
    ckpt = RunDir(workdir).checkpointer()
    step = ckpt.latest_step()
    # the template only needs the structure: rebuild it the way train does
    task_settings = {k: v for k, v in config.task.items() if k != "name"}
    from attnjax import models, tasks

    task = tasks.create(config.task.name, **task_settings)
    model = models.build(config.model, task)
    batch = task.batch("train", 0, 2, 0)
    params = model.init(jax.random.PRNGKey(0), batch["inputs"],
                        positions=batch.get("positions"))["params"]
    tx = steps.make_optimizer(config)
    template = steps.TrainState(step=np.int32(0), params=params, opt_state=tx.init(params))
    state, data = ckpt.restore(step, template)
    ckpt.close()
    assert data["next_index"] == step  # the data stream's position is saved with the state
    return step, state.params


def _curve(workdir):
    """metrics.jsonl without the wall-clock fields, which legitimately differ."""
    drop = {"wall_time_s", *train.TIMING}
    return [{k: v for k, v in r.items() if k not in drop} for r in RunDir(workdir).read_metrics()]


@pytest.mark.slow
def test_tiny_mqar_learns_and_writes_a_complete_run_dir(tmp_path):
    config = tiny_config(num_train_steps=300, eval_every_steps=100, checkpoint_every_steps=100,
                         batch_size=64, warmup_steps=30,
                         **{"model.num_layers": 2})  # recall needs two layers (induction)
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["status"] == "done", summary
    chance = 1 / (config.task.vocab_size // 2)
    assert summary["final_metrics"]["eval/accuracy"] > 0.5 > 3 * chance

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "done" and on_disk["step"] == 300
    for key in ("num_params", "steps_per_second", "wall_time_s", "versions", "device",
                "git_revision", "final_metrics", "started_at", "flops_per_token", "state_size",
                "peak_memory_bytes", "peak_memory_kind"):
        assert key in on_disk, key
    assert on_disk["flops_per_token"] > on_disk["attention_flops_per_token"] > 0
    assert on_disk["state_size"] is None  # softmax keeps a KV cache
    assert on_disk["peak_memory_kind"] == "compiled" and on_disk["peak_memory_bytes"] > 0
    # the held-out test split is scored once, at the end
    assert summary["final_metrics"]["test/accuracy"] > 0.5
    assert on_disk["versions"]["jax"] == jax.__version__
    assert on_disk["device"]["platform"] == "cpu"
    resolved = json.loads((tmp_path / "config.json").read_text())
    # what was asked ("auto"), not the path it resolved to on this backend
    assert resolved["model"]["attention_kwargs"] == {"implementation": "auto", "block_size": 512}
    assert resolved["task"]["num_kv_pairs"] == 2
    lines = RunDir(tmp_path).read_metrics()
    assert [r["step"] for r in lines if "eval/accuracy" in r] == [100, 200, 300]
    assert [r["step"] for r in lines if "test/accuracy" in r] == [300]
    assert all("train/loss" in r for r in lines
               if "eval/accuracy" not in r and "test/accuracy" not in r)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert RunDir(tmp_path).checkpointer().latest_step() == 300


def test_crash_after_first_checkpoint_resumes_to_identical_result(tmp_path):
    config = tiny_config()
    full = train.train_and_evaluate(config, tmp_path / "full")

    def crash(step):
        if step == 15:
            raise RuntimeError("simulated crash")
        return False

    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train_and_evaluate(config, tmp_path / "resumed", step_callback=crash)
    crashed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    assert crashed["status"] == "failed" and "simulated crash" in crashed["reason"]
    assert RunDir(tmp_path / "resumed").checkpointer().latest_step() == 10

    resumed = train.train_and_evaluate(config, tmp_path / "resumed")
    assert resumed["status"] == "done"
    assert _strip(resumed) == _strip(full)
    assert _curve(tmp_path / "resumed") == _curve(tmp_path / "full")
    step_a, params_a = _final_params(tmp_path / "full", train.config_lib.resolve(config))
    step_b, params_b = _final_params(tmp_path / "resumed", train.config_lib.resolve(config))
    assert step_a == step_b == 20
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)


def _strip(summary):
    return {k: v for k, v in summary["final_metrics"].items() if k not in train.TIMING}


def test_preemption_saves_and_resumes(tmp_path):
    config = tiny_config()
    full = train.train_and_evaluate(config, tmp_path / "full")
    stopped = train.train_and_evaluate(config, tmp_path / "p", step_callback=lambda s: s == 7)
    assert stopped["status"] == "preempted" and stopped["step"] == 7
    assert RunDir(tmp_path / "p").checkpointer().latest_step() == 7
    resumed = train.train_and_evaluate(config, tmp_path / "p")
    assert resumed["status"] == "done"
    assert _strip(resumed) == _strip(full)
    # the stop logs the partial window (steps 6-7), so train lines differ there; evals may not
    evals = lambda d: [r for r in _curve(d) if "eval/loss" in r]
    assert evals(tmp_path / "p") == evals(tmp_path / "full")
    assert [r["step"] for r in _curve(tmp_path / "p") if "train/loss" in r] == [5, 7, 10, 15, 20]


def test_finished_run_is_not_trained_again(tmp_path):
    config = tiny_config(num_train_steps=5, eval_every_steps=5, checkpoint_every_steps=5)
    train.train_and_evaluate(config, tmp_path)
    before = (tmp_path / "metrics.jsonl").read_text()
    calls = []
    summary = train.train_and_evaluate(config, tmp_path, step_callback=calls.append)
    assert summary["status"] == "done" and calls == []
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_other_config_in_existing_run_dir_is_refused(tmp_path):
    train.train_and_evaluate(tiny_config(num_train_steps=5), tmp_path)
    with pytest.raises(ConfigError, match="different config"):
        train.train_and_evaluate(tiny_config(num_train_steps=5, seed=3), tmp_path)


def test_non_finite_loss_fails_the_run_with_step_and_reason(tmp_path):
    config = tiny_config(learning_rate=float("inf"), grad_clip_norm=0.0, log_every_steps=4)
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["status"] == "failed"
    assert "non-finite loss" in summary["reason"] and "at step 2" in summary["reason"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["reason"] == summary["reason"]
    assert RunDir(tmp_path).checkpointer().latest_step() is None  # never checkpoint a NaN state


def test_learning_rate_and_seed_sweeps_reuse_the_compiled_step(tmp_path):
    steps.compiled_train.cache_clear()
    train.train_and_evaluate(tiny_config(num_train_steps=2), tmp_path / "a")
    train.train_and_evaluate(tiny_config(num_train_steps=2, seed=1, learning_rate=1e-2,
                                         weight_decay=0.0), tmp_path / "b")
    info = steps.compiled_train.cache_info()
    assert (info.misses, info.hits) == (1, 1)


PMAP_SCRIPT = """
import json, sys
import jax, numpy as np
from attnjax import train
from attnjax.rundir import RunDir
from tests.conftest import tiny_config
assert jax.local_device_count() == 8, jax.local_devices()
out = {}
for n in (1, 8):
    cfg = tiny_config(num_train_steps=10, log_every_steps=1, eval_every_steps=5, num_devices=n)
    s = train.train_and_evaluate(cfg, sys.argv[1] + f"/d{n}")
    out[n] = {"summary": s["final_metrics"], "device_count": s["device"]["used"],
              "curve": [r for r in RunDir(sys.argv[1] + f"/d{n}").read_metrics()]}
print(json.dumps(out))
"""


def test_pmap_on_8_devices_matches_one_device(tmp_path):
    code = f"import sys; sys.argv = ['x', {str(tmp_path)!r}]\n" + PMAP_SCRIPT
    proc = run_python(code, devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, eight = out["1"], out["8"]
    loss = lambda run: [r["train/loss"] for r in run["curve"] if "train/loss" in r]
    assert len(loss(one)) == 10
    np.testing.assert_allclose(loss(one), loss(eight), rtol=1e-5, atol=1e-6)
    for key in ("eval/loss", "eval/accuracy"):
        np.testing.assert_allclose(one["summary"][key], eight["summary"][key], rtol=1e-5)
    assert (one["device_count"], eight["device_count"]) == (1, 8)


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    import os
    import signal

    def scheduler(step):  # a scheduler's preemption notice arrives during step 5
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return False

    before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: e.g. ray.init sets one
    summary = train.train_and_evaluate(tiny_config(), tmp_path, step_callback=scheduler)
    assert summary["status"] == "preempted" and summary["step"] == 6
    assert RunDir(tmp_path).checkpointer().latest_step() == 6
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are restored


def test_resume_at_the_last_checkpoint_still_ends_with_eval_metrics(tmp_path):
    """A crash after the final checkpoint but before the final summary."""
    config = tiny_config(num_train_steps=5, eval_every_steps=5, checkpoint_every_steps=5)
    done = train.train_and_evaluate(config, tmp_path)
    summary_path = tmp_path / "summary.json"
    crashed = {**json.loads(summary_path.read_text()), "status": "running", "final_metrics": {}}
    summary_path.write_text(json.dumps(crashed))
    again = train.train_and_evaluate(config, tmp_path)
    assert again["status"] == "done"
    assert again["final_metrics"]["eval/loss"] == done["final_metrics"]["eval/loss"]
