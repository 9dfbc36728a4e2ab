"""`attnjax bench replicas`: K runs packed into one compiled program vs K runs one by one.

    attnjax bench replicas [--config configs/mqar.py:quickstart] [--k 1,2,4,8,16]
                           [--steps 50] [--set KEY=VALUE ...] [--out DIR]

For each K: the pack train step of K runs of the config (seeds 0..K-1, the shapes every pack
of that config has) is compiled and timed over `--steps` steps on one fixed batch per run
(data generation is measured by `bench data`). run-steps/s = K · steps / time; K sequential
runs make K=1's run-steps/s, so `speed-up` = packed run-steps/s ÷ K=1's. Reported with and
without the compile (a pack compiles once for its whole run), and the compiled step's memory
(XLA's estimate: arguments + temporaries). Writes <out>/replicas_benchmark.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from attnjax import provenance, rundir
from attnjax.bench import parse_sets

SIZES = {
    "quickstart": ("configs/mqar.py:quickstart", {}),
    # Zoology's width at L=256 (the "Zoology-width MQAR model")
    "zoology": ("configs/mqar.py", {"model.d_model": 128, "task.seq_len": 256,
                                    "task.num_kv_pairs": 16, "model.mlp_dim": 256}),
}


def _load(spec: str, overrides: dict):
    from attnjax import config as config_lib

    path, _, arg = spec.partition(":")
    config = config_lib.load_config_file(path, arg or None)
    return config_lib.resolve(config_lib.apply_overrides(
        config, {**overrides, "num_devices": 1, "progress_bar": False}))


def measure(config, k: int, steps: int) -> dict:
    import jax

    from attnjax import steps as steps_lib
    from attnjax.config import apply_overrides, resolve
    from attnjax.input_pipeline import DataSource, PackSource
    from attnjax.parallel import replicate, shard

    configs = [resolve(apply_overrides(config, {"seed": i, "data_seed": i})) for i in range(k)]
    task, _, model, devices, tx, p_train = steps_lib.setup(configs[0])
    sources = PackSource(tuple(DataSource(task, "train", c.batch_size, c.data_seed)
                               for c in configs))
    batch = shard(sources.host_batch(0), devices)
    first = sources.members[0].host_batch(0)
    state = replicate(steps_lib.stack([steps_lib.init_state(c, model, tx, first)
                                       for c in configs]), devices)
    hparams, rngs = steps_lib.pack_hparams(configs), steps_lib.pack_rngs(configs)
    row = {"k": k}
    try:
        start = time.perf_counter()
        compiled = p_train.lower(state, batch, hparams, rngs).compile()
        row["compile_s"] = time.perf_counter() - start
        state, _ = compiled(state, batch, hparams, rngs)  # warm
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch, hparams, rngs)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - start
    except Exception as e:  # e.g. out of memory at this K
        row["error"] = str(e).splitlines()[0][:200]
        return row
    m = compiled.memory_analysis()
    row.update(step_s=elapsed / steps, run_steps_per_s=k * steps / elapsed,
               run_steps_per_s_with_compile=k * steps / (elapsed + row["compile_s"]),
               memory_bytes=int(m.argument_size_in_bytes + m.temp_size_in_bytes))
    return row


def markdown(rows: list[dict]) -> str:
    base = next((r for r in rows if r["k"] == 1 and "error" not in r), None)
    lines = ["| K | step (ms) | run-steps/s | speed-up | run-steps/s incl. compile | compile (s) "
             "| memory (MiB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['k']} | {r['error']} | | | | | |")
            continue
        speed = f"{r['run_steps_per_s'] / base['run_steps_per_s']:.2f}×" if base else "—"
        lines.append(f"| {r['k']} | {r['step_s'] * 1e3:.1f} | {r['run_steps_per_s']:.1f} | "
                     f"{speed} | {r['run_steps_per_s_with_compile']:.1f} | "
                     f"{r['compile_s']:.1f} | {r['memory_bytes'] / 2**20:.1f} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="attnjax bench replicas", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="quickstart",
                   help=f"a config file[:arg] or a size: {', '.join(SIZES)}")
    p.add_argument("--k", default="1,2,4,8,16", help="comma-separated pack sizes")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides (e.g. --set model.d_model=128)")
    p.add_argument("--out", default="runs/bench-replicas")
    args = p.parse_args(argv)
    spec, overrides = SIZES.get(args.config, (args.config, {}))
    overrides = {**overrides, **parse_sets(args.set)}
    config = _load(spec, overrides)
    rows = []
    for k in (int(x) for x in args.k.split(",")):
        rows.append(measure(config, k, args.steps))
        print(f"K={k}: {rows[-1]}", file=sys.stderr)
    import jax

    device = jax.local_devices()[0]
    out = Path(args.out)
    report = {"kind": "replicas", "date": provenance.now(), "versions": provenance.versions(),
              "device": {"platform": device.platform, "kind": device.device_kind},
              "config": spec, "overrides": overrides, "steps": args.steps, "rows": rows,
              "command": "attnjax bench replicas " + " ".join(argv)}
    rundir.atomic_write_json(out / "replicas_benchmark.json", report)
    print(markdown(rows))
    return 0
