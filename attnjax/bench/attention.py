"""Attention speed and memory: `attnjax bench attention [options]`.

For every variant × sequence length: the variant alone (no projections or MLP, so only the token
mixing is measured) on random q, k, v [B, L, H, D/H] (mixer-level variants: x [B, L, D]),
jitted forward + backward (gradient of mean(out²) w.r.t. the inputs and the variant's own
parameters), compiled and run once, then timed over `--repeats` calls with block_until_ready.

    attnjax bench attention --attention softmax,linear,softmax:implementation=cudnn \\
        --seq-lens 512,1024,2048,4096 --dtype bfloat16 --out runs/bench/attention

A name may carry settings after colons (`local:window_size=128`). `--attention all` is every
attention-level variant that supports the chosen mode (causal or not); a named variant that
cannot run in the mode gets a "skipped" row. A row that runs out of memory or fails is recorded
("oom" / "error" with the reason) and the benchmark goes on.

Each row records ms_per_step (median over repeats), tokens_per_second (B·L per step),
compiled_temp_bytes (XLA's temporaries for the step: `compiled.memory_analysis()`, any backend)
and peak_memory_bytes (the device allocator's peak, GPU/TPU only; null on CPU). The forward
alone is compiled and timed too (ms_forward), and both give achieved TFLOP/s and % of the
device's peak FLOP/s for the dtype (`attnjax.hardware.peak_flops`; omitted, never guessed, for
an unknown device or CPU). FLOPs convention: the forward is the variant's declared
`flops(L, L, head_dim)` × batch × heads (mixer level: `flops(L, L, d_model)` × batch) — the
same count as the model's FLOP budget, with no discount for causal masking (a causal kernel
that skips masked tiles does about half of a dense variant's declared work, so its rate reads
up to 2× the FlashAttention convention, which counts causal attention as half); forward +
backward is 3 × the forward (backward ≈ 2 × forward; FlashAttention's papers use 3.5 ×, which
would read 7/6 higher). `implementation` is the path a variant with several ran (softmax's
`auto` resolved on this backend), null for the others. The allocator's
peak cannot be reset, so where the device reports it every row runs in its own process
(`--no-isolate` runs them in this one: the peak is then the process's high-water mark).
Output: <out>/benchmark.json (rewritten atomically after every row) and a markdown table.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnjax import attention, provenance, rundir
from attnjax.registry import ConfigError

DEFAULT_VARIANTS = ("softmax", "linear", "local", "block_local", "performer", "retention")
DEFAULT_SEQ_LENS = (256, 512, 1024, 2048)
DTYPES = ("float32", "bfloat16")
ROW_PREFIX = "BENCH_ROW "  # how an isolated child hands its row back on stdout
FLOPS_CONVENTION = ("forward = the variant's declared flops(L, L, head_dim) x batch x heads "
                    "(no causal discount); forward+backward = 3 x forward")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark row's inputs. `attention` is a variant name with optional `:key=value`s."""

    attention: str
    seq_len: int
    batch_size: int
    d_model: int
    num_heads: int
    causal: bool
    dtype: str
    repeats: int


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """'local:window_size=128' -> ('local', {'window_size': 128}); ConfigError if unknown."""
    name, *pairs = spec.split(":")
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"bad variant setting {pair!r} in {spec!r}; use name:key=value")
        try:
            settings[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            settings[key] = value  # a bare string such as implementation=cudnn
    attention.check_options(name, settings)  # unknown variant or setting -> ConfigError
    return name, settings


def _row(case: Case, status: str, reason: str | None = None, **measured) -> dict[str, Any]:
    return {
        "attention": case.attention, "seq_len": case.seq_len, "batch_size": case.batch_size,
        "d_model": case.d_model, "num_heads": case.num_heads, "causal": case.causal,
        "ms_per_step": None, "tokens_per_second": None, "peak_memory_bytes": None,
        "compiled_temp_bytes": None, "implementation": None, "ms_forward": None,
        "flops_forward": None, "tflops_forward": None, "peak_percent_forward": None,
        "tflops_fwd_bwd": None, "peak_percent_fwd_bwd": None, "status": status,
        "reason": reason, **measured,
    }


FWD_BWD_FACTOR = 3.0  # forward + backward FLOPs = 3 x forward (see the module doc)


def peak_flops(dtype: str) -> float | None:
    """The first device's peak FLOP/s for dtype, from attnjax.hardware when it knows the
    device; None otherwise (then no % of peak is shown)."""
    import jax

    try:
        from attnjax.hardware import peak_flops as table
    except ImportError:  # the peak table is not part of this build
        return None
    try:
        peak = table(jax.local_devices()[0].device_kind, dtype)
    except Exception:  # an unexpected signature or device: no number rather than a wrong one
        return None
    return float(peak) if peak else None


def rates(flops_forward: float, ms_forward: float, ms_fwd_bwd: float,
          peak: float | None) -> dict[str, float | None]:
    """Achieved TFLOP/s of the forward and of forward + backward, and % of `peak` FLOP/s."""
    out = {"flops_forward": flops_forward,
           "tflops_forward": flops_forward / (ms_forward * 1e-3) / 1e12,
           "tflops_fwd_bwd": FWD_BWD_FACTOR * flops_forward / (ms_fwd_bwd * 1e-3) / 1e12}
    for key in ("forward", "fwd_bwd"):
        tflops = out[f"tflops_{key}"]
        out[f"peak_percent_{key}"] = None if not peak else 100.0 * tflops * 1e12 / peak
    return out


def _time(fn, args, repeats: int) -> float:
    """Median seconds of fn(*args) over `repeats` calls after one warm-up call."""
    import jax

    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def skip_reason(name: str, causal: bool) -> str | None:
    caps = attention.get(name).capabilities
    if causal and not caps.causal:
        return f"{name} has no causal mode"
    if not causal and not caps.bidirectional:
        return f"{name} is causal only"
    return None


def _is_oom(message: str) -> bool:
    return any(s in message for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory",
                                      "OOM"))


def measure(case: Case) -> dict[str, Any]:
    """Compile, run and time one case in this process; failures become oom/error rows."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    name, settings = parse_variant(case.attention)
    if (why := skip_reason(name, case.causal)) is not None:
        return _row(case, "skipped", why)
    try:
        module = attention.create(name, **settings, max_length=case.seq_len)
        b, length, h = case.batch_size, case.seq_len, case.num_heads
        rng = np.random.default_rng(0)  # host random numbers: nothing to compile
        if module.capabilities.level == "mixer":
            shapes = [(b, length, case.d_model)]  # x: [B, L, D]
        else:
            shapes = [(b, length, h, case.d_model // h)] * 3  # q, k, v: [B, L, H, Dh]
        inputs = tuple(jnp.asarray(rng.standard_normal(s, np.float32), case.dtype)
                       for s in shapes)
        init = jax.jit(functools.partial(module.init, causal=case.causal))  # one compile
        variables = init(jax.random.PRNGKey(1), *inputs)
        params = variables.get("params", {})
        others = {k: v for k, v in variables.items() if k != "params"}

        def forward(params, others, inputs):
            return module.apply({"params": params, **others}, *inputs, causal=case.causal)

        def loss(params, others, inputs):
            out = forward(params, others, inputs)
            return jnp.mean(jnp.square(out.astype(jnp.float32)))

        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
        compiled = step.lower(params, others, inputs).compile()
        temp = None
        analysis = compiled.memory_analysis()
        if analysis is not None:
            temp = int(analysis.temp_size_in_bytes)
        seconds = _time(compiled, (params, others, inputs), case.repeats)
        forward_seconds = _time(jax.jit(forward).lower(params, others, inputs).compile(),
                                (params, others, inputs), case.repeats)
        implementation = None
        if hasattr(module, "resolve_implementation"):  # what `auto` resolved to (softmax)
            implementation = module.apply(variables, *inputs, causal=case.causal,
                                          method="resolve_implementation")
        if module.capabilities.level == "mixer":
            flops = b * float(module.flops(length, length, case.d_model))
        else:
            flops = b * h * float(module.flops(length, length, case.d_model // h))
        stats = None
        try:
            stats = jax.local_devices()[0].memory_stats()
        except Exception:  # backends without allocator statistics
            stats = None
        peak = int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
        return _row(case, "ok", ms_per_step=seconds * 1e3,
                    tokens_per_second=b * length / seconds, peak_memory_bytes=peak,
                    compiled_temp_bytes=temp, implementation=implementation,
                    ms_forward=forward_seconds * 1e3,
                    **rates(flops, forward_seconds * 1e3, seconds * 1e3, peak_flops(case.dtype)))
    except Exception as e:  # one bad row never stops the benchmark
        message = f"{type(e).__name__}: {e}".strip()
        return _row(case, "oom" if _is_oom(message) else "error", message.splitlines()[0][:500])


def measure_isolated(case: Case) -> dict[str, Any]:
    """`measure` in a fresh process, so the allocator's peak belongs to this row alone."""
    code = ("import json, sys; from attnjax.bench.attention import Case, measure, ROW_PREFIX; "
            "print(ROW_PREFIX + json.dumps(measure(Case(**json.loads(sys.argv[1])))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(case))],
                          capture_output=True, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(ROW_PREFIX):
            return json.loads(line[len(ROW_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return _row(case, "oom" if _is_oom(proc.stderr) else "error",
                f"the benchmark process died ({proc.returncode}): {tail[:500]}")


# ---------------------------------------------------------------------------- output


def _mib(x) -> str:
    return "—" if x is None else f"{x / 2**20:,.1f}"


def _num(x, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| attention | seq_len | ms/step | tokens/s | fwd TFLOP/s | fwd % peak | "
             "fwd+bwd TFLOP/s | fwd+bwd % peak | peak MiB | temp MiB | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(
            f"| {r['attention']} | {r['seq_len']} | {_num(r['ms_per_step'], '.2f')} | "
            f"{_num(r['tokens_per_second'], ',.0f')} | {_num(r.get('tflops_forward'), '.3g')} | "
            f"{_num(r.get('peak_percent_forward'), '.1f')} | "
            f"{_num(r.get('tflops_fwd_bwd'), '.3g')} | {_num(r.get('peak_percent_fwd_bwd'), '.1f')}"
            f" | {_mib(r['peak_memory_bytes'])} | {_mib(r['compiled_temp_bytes'])} | {status} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"expected positive integers, got {text!r}")
    return values


def select_variants(text: str, causal: bool) -> list[str]:
    """The --attention list; 'all' = every attention-level variant that supports the mode."""
    if text == "all":
        return [n for n in attention.names()
                if attention.get(n).capabilities.level == "attention"
                and skip_reason(n, causal) is None]
    specs = [s.strip() for s in text.split(",") if s.strip()]
    for spec in specs:
        parse_variant(spec)  # all names checked before anything runs
    return specs


def _device() -> tuple[str, bool]:
    """(a description of the device, whether its allocator reports a peak)."""
    import jax

    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:
        stats = None
    kind = device.device_kind
    name = kind if device.platform.lower() in kind.lower() else f"{kind} ({device.platform})"
    return name, bool(stats and "peak_bytes_in_use" in stats)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="attnjax bench attention",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--attention", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated variants (name[:key=value...]) or 'all'")
    parser.add_argument("--seq-lens", default=",".join(map(str, DEFAULT_SEQ_LENS)))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="one process per row (default: when the device reports its peak)")
    parser.add_argument("--out", default="runs/bench/attention")
    args = parser.parse_args(argv)

    variants = select_variants(args.attention, args.causal)
    seq_lens = _ints(args.seq_lens)
    if args.batch_size <= 0 or args.d_model <= 0 or args.num_heads <= 0 or args.repeats <= 0:
        raise ConfigError("--batch-size, --d-model, --num-heads and --repeats must be positive")
    if args.d_model % args.num_heads:
        raise ConfigError(f"--d-model {args.d_model} must be divisible by --num-heads "
                          f"{args.num_heads}")
    # this process only describes the device: keep it from reserving most of a GPU's memory
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    device, has_peak = _device()
    isolate = has_peak if args.isolate is None else args.isolate
    out = Path(args.out) / "benchmark.json"
    report = {"kind": "attention", "device": device, "date": provenance.now(),
              "versions": provenance.versions(),
              "command": shlex.join(["attnjax", "bench", "attention", *argv]),
              "dtype": args.dtype, "peak_flops": peak_flops(args.dtype),
              "flops_convention": FLOPS_CONVENTION, "rows": []}
    rundir.atomic_write_json(out, report)
    for name in variants:
        for seq_len in seq_lens:
            case = Case(name, seq_len, args.batch_size, args.d_model, args.num_heads,
                        args.causal, args.dtype, args.repeats)
            row = measure_isolated(case) if isolate else measure(case)
            report["rows"].append(row)
            rundir.atomic_write_json(out, report)
            print(f"{name} L={seq_len}: {row['status']}"
                  + (f" {row['ms_per_step']:.2f} ms" if row["ms_per_step"] is not None else ""),
                  file=sys.stderr, flush=True)
    print(markdown(report["rows"]))
    print(f"\nwrote {out}")
    return 0
