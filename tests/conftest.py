"""Shared test helpers. Tests run on CPU; multi-device tests start a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (it must be set before jax is imported)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Tests compile hundreds of small programs: XLA's backend optimisations roughly double compile
# time and buy nothing at these sizes. Set before jax's backend starts (numerics checks compare
# against references, so they hold at any optimisation level).
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

# The suite never writes to the user's compilation cache (tests that check the cache set it
# on again, to a temporary directory, in the subprocess they start).
os.environ["ATTNJAX_COMPILATION_CACHE"] = "off"
# ... nor to the user's data cache (runs with data_cache=True write here unless a test says)
os.environ["ATTNJAX_DATA_CACHE"] = tempfile.mkdtemp(prefix="attnjax-test-data-cache-")

import pytest  # noqa: E402

from attnjax import config as config_lib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def documented_args(path: Path) -> list[str]:
    """The arguments a config or experiment file's docstring runs it with (`file.py:ARG`)."""
    return sorted(set(re.findall(rf"{re.escape(path.name)}:(\w+)", path.read_text())))


def tiny_config(**overrides):
    """A seconds-long MQAR run (L=16, 2 kv pairs, 1 layer, d=32) on one device."""
    c = config_lib.load_config_file("mqar")
    c = config_lib.apply_overrides(c, {
        "num_train_steps": 20, "batch_size": 16, "warmup_steps": 5, "learning_rate": 3e-3,
        "eval_every_steps": 10, "log_every_steps": 5, "checkpoint_every_steps": 10,
        "num_eval_batches": 2, "num_devices": 1, "progress_bar": False,
        "model.num_layers": 1, "model.d_model": 32, "model.mlp_dim": 64,
        "task.vocab_size": 16, "task.seq_len": 16, "task.num_kv_pairs": 2,
        **overrides,
    })
    return c


@pytest.fixture
def tiny():
    return tiny_config


def run_python(code: str, *, devices: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter with `devices` simulated CPU devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "attnjax", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
