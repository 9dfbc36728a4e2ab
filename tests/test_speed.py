"""Speed made visible (model FLOPs, TFLOP/s, MFU), out-of-memory refusals, the persistent
compilation cache and `bench train`."""

from __future__ import annotations

import json
import textwrap

import pytest

from attnjax import cli, compilation_cache, hardware, tasks, train
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir
from tests.conftest import run_python, tiny_config


def test_peak_flops_table_knows_the_datasheet_devices_and_nothing_else():
    tera = 1e12
    assert hardware.peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.5 * tera
    assert hardware.peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756.5 * tera
    assert hardware.peak_flops("NVIDIA H200", "bfloat16") == 989.5 * tera
    assert hardware.peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156 * tera  # TF32
    assert hardware.peak_flops("NVIDIA L4", "bfloat16") == 121 * tera
    assert hardware.peak_flops("TPU v4", "bfloat16") == 275 * tera
    assert hardware.peak_flops("TPU v5 lite", "bfloat16") == 197 * tera
    assert hardware.peak_flops("TPU v5", "bfloat16") == 459 * tera  # v5p's device_kind
    assert hardware.peak_flops("TPU v6 lite", "bfloat16") == 918 * tera
    for unknown in ("cpu", "NVIDIA A10G", "TPU v4 lite", "Some Future Chip"):
        assert hardware.peak_flops(unknown, "bfloat16") is None, unknown
    assert hardware.peak_flops("NVIDIA H100 80GB HBM3", "float8") is None
    assert hardware.mfu(494.75e12, "NVIDIA H100 80GB HBM3", "bfloat16", 1) == 0.5
    assert hardware.mfu(1e12, "cpu", "float32", 1) is None


def test_summary_metrics_report_model_flops_tflops_and_mfu(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "peak_flops", lambda kind, dtype: 1e9)  # pretend a known chip
    config = tiny_config(num_train_steps=6, log_every_steps=2, eval_every_steps=6,
                         checkpoint_every_steps=6)
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["status"] == "done", summary
    tokens = config.batch_size * config.task.seq_len
    assert summary["model_flops_per_step"] == pytest.approx(
        3 * summary["flops_per_token"] * tokens)
    assert summary["tflops_per_second"] == pytest.approx(
        summary["model_flops_per_step"] * summary["steps_per_second"] / 1e12)
    assert summary["mfu"] == pytest.approx(summary["tflops_per_second"] * 1e12 / 1e9)
    assert summary["compute_dtype"] == "float32" and summary["compile_time_s"] > 0
    lines = [r for r in RunDir(tmp_path).read_metrics() if "steps_per_second" in r]
    assert lines and all(r["tflops_per_second"] > 0 and r["mfu"] > 0 for r in lines)


def test_unknown_device_has_no_mfu(tmp_path):
    summary = train.train_and_evaluate(tiny_config(num_train_steps=4, log_every_steps=2),
                                       tmp_path)
    assert summary["mfu"] is None and summary["peak_flops_per_device"] is None
    assert summary["tflops_per_second"] > 0  # CPU: achieved FLOP/s, but no peak to divide by
    assert not any("mfu" in r for r in RunDir(tmp_path).read_metrics())


def test_a_step_that_does_not_fit_fails_the_run_with_the_knobs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hardware, "free_memory_bytes", lambda device: 1024)
    reference = {"model.attention_kwargs": {"implementation": "reference"}}  # the [L, L] path
    with pytest.raises(train.OutOfMemory):
        train.train_and_evaluate(tiny_config(**reference), tmp_path / "run")
    summary = RunDir(tmp_path / "run").read_summary()
    assert summary["status"] == "failed" and summary["step"] == 0
    reason = summary["reason"]
    assert reason.startswith("out of memory: the train step needs ~"), reason
    for knob in ("host has 0.00 GiB free", "batch_size (now 16)",
                 "model.attention_kwargs.implementation=auto or blockwise"):
        assert knob in reason, (knob, reason)
    # knobs that lower no memory on XLA:CPU are not offered there
    assert "model.remat" not in reason and "bfloat16" not in reason, reason
    # the command line: one line on stderr, exit status 1, no traceback
    (tmp_path / "tiny.py").write_text(textwrap.dedent("""
        from tests.conftest import tiny_config
        def get_config():
            return tiny_config()
    """))
    assert cli.main(["run", str(tmp_path / "tiny.py"), "--workdir", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "Traceback" not in err


def test_an_allocation_failure_in_the_first_step_is_out_of_memory(tmp_path, monkeypatch):
    real = train.setup

    def failing_setup(config):
        task, scored, model, devices, tx, p_train = real(config)

        class Exhausted:  # compiles as usual, then the device runs out of memory
            lower = staticmethod(p_train.lower)

            def __call__(self, *args):
                raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 12345 bytes")

        return task, scored, model, devices, tx, Exhausted()

    monkeypatch.setattr(train, "setup", failing_setup)
    with pytest.raises(train.OutOfMemory):
        train.train_and_evaluate(tiny_config(), tmp_path)
    assert RunDir(tmp_path).read_summary()["reason"].startswith("out of memory: the train step")


def test_compilation_cache_location_and_off(monkeypatch, tmp_path):
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compilation_cache.directory() == tmp_path / "attnjax" / "jax"
    monkeypatch.setenv(compilation_cache.ENV, "off")
    assert compilation_cache.directory() is None
    monkeypatch.setenv(compilation_cache.ENV, str(tmp_path / "c"))
    assert compilation_cache.directory() == tmp_path / "c"


CACHED_RUN = """
import json, os, sys, time
import jax
counts = {}
jax.monitoring.register_event_listener(
    lambda name, **kw: counts.__setitem__(name, counts.get(name, 0) + 1))
from tests.conftest import tiny_config  # sets the cache off for the suite: on again here
os.environ["ATTNJAX_COMPILATION_CACHE"] = sys.argv[1]
from attnjax import train
summary = train.train_and_evaluate(tiny_config(num_train_steps=2, log_every_steps=1),
                                   sys.argv[2])
print(json.dumps({"hits": counts.get("/jax/compilation_cache/cache_hits", 0),
                  "misses": counts.get("/jax/compilation_cache/cache_misses", 0),
                  "compile_time_s": summary["compile_time_s"], "status": summary["status"]}))
"""


def test_a_second_identical_run_loads_its_compiled_programs_from_the_cache(tmp_path):
    runs = []
    for name in ("first", "second"):
        code = f"import sys; sys.argv = ['x', {str(tmp_path / 'cache')!r}, " \
               f"{str(tmp_path / name)!r}]\n" + CACHED_RUN
        out = run_python(code)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["status"] == second["status"] == "done"
    assert first["misses"] >= 2 and first["hits"] == 0  # init, train step, eval step compiled
    assert second["hits"] >= 2 and second["misses"] == 0, runs  # ... and loaded back
    print(f"compile_time_s first {first['compile_time_s']:.2f}, "
          f"second {second['compile_time_s']:.2f}")


def test_bench_train_reports_speed_and_memory_at_a_tiny_size(tmp_path):
    from attnjax import bench

    assert bench.main(["train", "--size", "tiny", "--steps", "2", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "train_benchmark.json").read_text())
    (row,) = report["rows"]
    assert report["kind"] == "train" and report["device"]["platform"] == "cpu"
    assert row["size"] == "tiny" and row["num_params"] > 0 and row["compile_s"] > 0
    assert row["tokens_per_s"] > 0 and row["tflops_per_s"] > 0 and row["mfu"] is None
    assert row["peak_memory_bytes"] > 0 and row["dtype"] == "float32"


def test_bytes_lm_synthetic_stream_is_deterministic_and_needs_no_file():
    a = tasks.create("bytes_lm", source="synthetic", seq_len=16, synthetic_bytes=5000)
    b = tasks.create("bytes_lm", source="synthetic", seq_len=16, synthetic_bytes=5000)
    for split in ("train", "eval", "test"):
        x, y = a.batch(split, 3, 4, 7), b.batch(split, 3, 4, 7)
        assert all((x[k] == y[k]).all() for k in x)
    text = bytes(a.batch("train", 0, 4, 0)["inputs"][0].astype("uint8"))
    assert set(text) <= set(b"abcdefghijklmnopqrstuvwxyz ")
    with pytest.raises(ConfigError, match="reads no file"):
        tasks.create("bytes_lm", source="synthetic", path="/data/enwik8")
    with pytest.raises(ConfigError, match="source must be one of"):
        tasks.create("bytes_lm", source="web")
