"""`attnjax bench train`: how fast does a GPT-style language model train here?

    attnjax bench train [--size gpt|cpu|tiny] [--batch-size B] [--steps 20]
                        [--set KEY=VALUE ...] [--out runs/bench/train]

A decoder-only Transformer on `bytes_lm` over its synthetic byte stream (no file needed), one
run, the train step the loop runs (steps.setup: pmap over the local devices, AdamW, the pack
axis of size 1). Sizes (SIZES): `gpt` is GPT-2 small's shape — 12 layers, d_model 768, 12
heads, MLP 3072, L 1024, vocabulary 256 (bytes, so ~86M parameters rather than 124M), batch 16
(the default on GPU/TPU); `cpu` a model a laptop trains in well under a minute (the default on
CPU); `tiny` a seconds-long smoke test. `--set` overrides any config key (model.remat=True,
model.dtype=float32, model.attention_kwargs.implementation=reference, ...).
Reported: compile time (lower + compile of the train step; a persistent-cache hit when
ATTNJAX_COMPILATION_CACHE already holds it), step time and tokens/s over `--steps` steps after
two warm-up steps on a few fixed device batches (data generation is `bench data`'s subject),
model TFLOP/s (3 x the analytic forward FLOPs of models/budget.py per step / step time), MFU
against hardware.peak_flops for the device and compute dtype (— where the peak is unknown, e.g.
CPU), and peak memory (the allocator's peak on GPU/TPU, XLA's estimate of the step on CPU).
Writes <out>/train_benchmark.json (device, date, versions, command).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from attnjax import provenance, rundir
from attnjax.bench import parse_sets

SIZES: dict[str, dict[str, Any]] = {
    "gpt": {"model.num_layers": 12, "model.d_model": 768, "model.num_heads": 12,
            "model.mlp_dim": 3072, "task.seq_len": 1024, "batch_size": 16},
    "cpu": {"model.num_layers": 4, "model.d_model": 128, "model.num_heads": 4,
            "model.mlp_dim": 512, "task.seq_len": 256, "batch_size": 8},
    "tiny": {"model.num_layers": 1, "model.d_model": 32, "model.num_heads": 2,
             "model.mlp_dim": 64, "task.seq_len": 32, "batch_size": 4},
}
DISTINCT_BATCHES = 4  # device batches cycled through while timing


def make_config(size: str, overrides: dict[str, Any]):
    """The resolved config of a size, with `overrides` on top."""
    from attnjax import config as config_lib

    config = config_lib.defaults()
    base = {"task.name": "bytes_lm", "task.source": "synthetic", "num_devices": 0,
            "model.positional": "learned", "model.dropout_rate": 0.0, "learning_rate": 3e-4,
            "warmup_steps": 10, "num_train_steps": 10_000, "progress_bar": False,
            **SIZES[size], **overrides}
    return config_lib.resolve(config_lib.apply_overrides(config, base))


def measure(config, steps: int) -> dict[str, Any]:
    import jax

    from attnjax import hardware
    from attnjax import steps as steps_lib
    from attnjax.input_pipeline import DataSource, PackSource
    from attnjax.models.budget import budget
    from attnjax.parallel import replicate, shard
    from attnjax.train import memory_info

    task, _, model, devices, tx, p_train = steps_lib.setup(config)
    source = PackSource((DataSource(task, "train", config.batch_size, config.data_seed),))
    host = [source.host_batch(i) for i in range(DISTINCT_BATCHES)]
    first = source.members[0].host_batch(0)
    state = replicate(steps_lib.stack([steps_lib.init_state(config, model, tx, first)]),
                      devices)
    batches = [shard(b, devices) for b in host]
    hparams, rngs = steps_lib.pack_hparams([config]), steps_lib.pack_rngs([config])
    dtype = hardware.compute_dtype(config.model.dtype)
    tokens = config.batch_size * task.max_length
    flops = 3.0 * budget(config.model, task)["flops_per_token"] * tokens
    row: dict[str, Any] = {
        "layers": config.model.num_layers, "d_model": config.model.d_model,
        "heads": config.model.num_heads, "seq_len": task.max_length,
        "batch_size": config.batch_size, "dtype": dtype, "attention": config.model.attention,
        "attention_kwargs": config.model.attention_kwargs.to_dict(),
        "remat": config.model.remat, "scan_layers": config.model.scan_layers,
        "devices": len(devices), "model_flops_per_step": flops,
    }
    try:
        start = time.perf_counter()
        compiled = p_train.lower(state, batches[0], hparams, rngs).compile()
        row["compile_s"] = time.perf_counter() - start
        for i in range(2):  # warm-up
            state, metrics = compiled(state, batches[i % len(batches)], hparams, rngs)
        jax.block_until_ready((state, metrics))
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = compiled(state, batches[i % len(batches)], hparams, rngs)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - start
    except Exception as e:  # e.g. out of memory at this size
        row["error"] = str(e).splitlines()[0][:300]
        return row
    row["num_params"] = steps_lib.count_params(steps_lib.member(state.params, 0))
    step_s = elapsed / steps
    achieved = flops / step_s
    row.update(step_s=step_s, tokens_per_s=tokens / step_s, tflops_per_s=achieved / 1e12,
               mfu=hardware.mfu(achieved, devices[0].device_kind, dtype,
                                len(devices) * jax.process_count()),
               **memory_info(devices, compiled))
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| size | layers × d | L | batch | dtype | params | compile (s) | step (ms) | "
             "tokens/s | TFLOP/s | MFU | peak mem (GiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = f"{r['layers']} × {r['d_model']}"
        if "error" in r:
            lines.append(f"| {r['size']} | {shape} | {r['seq_len']} | {r['batch_size']} | "
                         f"{r['dtype']} | {r['error']} | | | | | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "—"
        memory = r.get("peak_memory_bytes")
        mem = f"{memory / 2**30:.2f}" + ("‡" if r.get("peak_memory_kind") == "compiled" else "")
        lines.append(
            f"| {r['size']} | {shape} | {r['seq_len']} | {r['batch_size']} | {r['dtype']} | "
            f"{r['num_params'] / 1e6:.1f}M | {r['compile_s']:.1f} | {r['step_s'] * 1e3:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['tflops_per_s']:.3g} | {mfu} | "
            f"{mem if memory else '—'} |")
    return "\n".join(lines) + "\n(‡ XLA's estimate of the compiled step: CPU has no allocator peak)"


def main(argv: list[str]) -> int:
    from attnjax import compilation_cache, hardware

    p = argparse.ArgumentParser(prog="attnjax bench train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=tuple(SIZES), default=None,
                   help="gpt (default on GPU/TPU) | cpu (default on CPU) | tiny")
    p.add_argument("--batch-size", type=int, help="global batch (default: the size's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides (e.g. --set model.remat=True)")
    p.add_argument("--out", default="runs/bench/train")
    args = p.parse_args(argv)
    size = args.size or ("gpt" if hardware.accelerated() else "cpu")
    overrides: dict[str, Any] = {}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    overrides.update(parse_sets(args.set))
    config = make_config(size, overrides)
    row = {"size": size, **measure(config, args.steps)}
    import jax

    device = jax.local_devices()[0]
    report = {"kind": "train", "date": provenance.now(), "versions": provenance.versions(),
              "device": {"platform": device.platform, "kind": device.device_kind,
                         "count": jax.device_count()},
              "compilation_cache": compilation_cache.directory() and str(
                  compilation_cache.directory()),
              "steps": args.steps, "overrides": overrides, "rows": [row],
              "command": "attnjax bench train " + " ".join(argv)}
    out = Path(args.out)
    rundir.atomic_write_json(out / "train_benchmark.json", report)
    print(markdown([row]))
    print(f"written: {out / 'train_benchmark.json'}")
    return 1 if "error" in row else 0
