"""Is data generation ever the bottleneck? Host batch rate of each task vs the train step's rate.

    attnjax bench data [--tasks mqar,listops,...] [--sizes quickstart,lra] [--batches 20]
                       [--steps 5] [--no-train] [--out runs/bench/data]

For each task and size (a config file with an argument, see SIZES) it measures, in one process:
  host batches/s   `DataSource.host_batch` in a loop on one thread (what the prefetch thread
                   does; numpy generation only, no device transfer) — or, for a config with
                   data_workers, through the Prefetcher with that many processes
  train steps/s    the compiled train step on pre-made device batches (compilation excluded)
  headroom         host batches/s ÷ train steps/s: > 1 means the prefetch thread keeps ahead
  cached batches/s the same batches read back from the on-disk data cache (`data_cache=True`,
                   attnjax/data_cache.py), filled first in a temporary directory (not timed);
                   `cached headroom` = cached batches/s ÷ train steps/s (--no-cache: skip)
Tasks that read local files (needs_data) are listed as skipped: their batches are slices of
arrays already in memory. Writes <out>/data_benchmark.json (device, date, versions, command).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from attnjax import config as config_lib
from attnjax import provenance, rundir, tasks
from attnjax.bench import parse_sets
from attnjax.registry import ConfigError, unknown_name_message

# size -> task -> (config file argument, extra overrides). Missing: the config file's default.
SIZES: dict[str, dict[str, tuple[str | None, dict[str, Any]]]] = {
    "quickstart": {
        "mqar": ("quickstart", {}),
        "listops": ("cpu", {}),
        "pathfinder": ("cpu", {}),
    },
    "lra": {  # Long Range Arena / Zoology scale
        "mqar": (None, {"task.seq_len": 512, "task.num_kv_pairs": 64, "task.vocab_size": 8192}),
        "listops": ("lra", {}),
        "pathfinder": ("lra", {}),
    },
}


def _config(task: str, size: str, sets: dict | None = None):
    arg, overrides = SIZES[size].get(task, (None, {}))
    path = config_lib.config_path(task)
    try:
        config = config_lib.load_config_file(str(path), arg)
    except ValueError:  # the config file has no such argument: its default size
        config = config_lib.load_config_file(str(path))
    return config_lib.resolve(config_lib.apply_overrides(config, {
        **overrides, "num_devices": 1, "progress_bar": False, **(sets or {})}))


def _rate(fn, count: int) -> float:
    fn(0)  # warm (first-call imports, caches)
    start = time.perf_counter()
    for i in range(1, count + 1):
        fn(i)
    return count / (time.perf_counter() - start)


def _pipeline_rate(source, count: int, workers: int) -> float:
    """Batches/s through the Prefetcher with `workers` processes, after their start-up."""
    from attnjax.input_pipeline import Prefetcher

    warm = 2 * workers
    with Prefetcher(source, 0, warm + count, workers=workers, depth=4) as stream:
        for i, _ in stream:
            if i == warm - 1:
                start = time.perf_counter()
        return count / (time.perf_counter() - start)


def _cached_rate(source, count: int, workers: int) -> float:
    """Batches/s read from a data cache holding batches [0, count], filled first."""
    import tempfile

    from attnjax import data_cache

    with tempfile.TemporaryDirectory(prefix="attnjax-bench-cache-") as root:
        cached = data_cache.cached(source, 0, count + 1, workers=workers, root_dir=root)
        if not isinstance(cached, data_cache.CachedSource):
            return float("nan")  # no room on the disk
        return _rate(cached.host_batch, count)


def measure(task_name: str, size: str, *, batches: int, steps: int, train: bool,
            cache: bool = True, sets: dict | None = None) -> dict:
    from attnjax import steps as train_lib
    from attnjax.input_pipeline import DataSource
    from attnjax.parallel import replicate, shard

    config = _config(task_name, size, sets)
    row = {"task": task_name, "size": size, "batch_size": config.batch_size,
           "attention": config.model.attention, "grad_accum_steps": config.grad_accum_steps}
    task, _, model, devices, tx, p_train = train_lib.setup(config)
    row["seq_len"] = task.max_length
    source = DataSource(task, "train", config.batch_size, config.seed)
    row["host_batches_per_s"] = _rate(source.host_batch, batches)
    row["host_examples_per_s"] = row["host_batches_per_s"] * config.batch_size
    row["data_workers"] = config.data_workers
    if config.data_workers:  # the pipeline as the run uses it: worker processes, in order
        row["host_batches_per_s"] = _pipeline_rate(source, batches, config.data_workers)
        row["host_examples_per_s"] = row["host_batches_per_s"] * config.batch_size
    if cache:
        row["cached_batches_per_s"] = _cached_rate(source, batches, config.data_workers)
    if not train:
        return row
    try:
        batch = source.host_batch(0)  # the train step of a pack of one run
        state = replicate(train_lib.stack([train_lib.init_state(config, model, tx, batch)]),
                          devices)
        device_batch = shard({k: v[:, None] for k, v in batch.items()}, devices)
        hparams, rng = train_lib.pack_hparams([config]), train_lib.pack_rngs([config])
        compiled = p_train.lower(state, device_batch, hparams, rng).compile()
        m = compiled.memory_analysis()
        row["step_memory_bytes"] = int(m.argument_size_in_bytes + m.temp_size_in_bytes)
        state, _ = compiled(state, device_batch, hparams, rng)  # warm
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, _ = compiled(state, device_batch, hparams, rng)
        jax.block_until_ready(state)
    except Exception as e:  # e.g. an LRA-sized model that does not fit this machine
        oom = "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower()
        row["train_error"] = ("out of memory: " if oom else "") + str(e).splitlines()[0][:200]
        return row
    row["train_steps_per_s"] = steps / (time.perf_counter() - start)
    row["headroom"] = row["host_batches_per_s"] / row["train_steps_per_s"]
    if row.get("cached_batches_per_s"):
        row["cached_headroom"] = row["cached_batches_per_s"] / row["train_steps_per_s"]
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| task | size | L | batch | micro-batches | workers | host batches/s | step memory "
             "(GiB) | train steps/s | headroom | cached batches/s | cached headroom |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") == "skipped":
            lines.append(f"| {r['task']} | {r['size']} | | | | | skipped: {r['reason']} "
                         "| | | | | |")
            continue
        train, headroom = r.get("train_steps_per_s"), r.get("headroom")
        if train:
            train_text = f"{train:.2f}" if train >= 0.1 else f"{train:.2g}"
        else:
            train_text = "OOM" if "memory" in r.get("train_error", "") else "—"
        ratio = lambda x: f"{x:,.1f}×" if x else "—"
        cached = r.get("cached_batches_per_s")
        memory = r.get("step_memory_bytes")
        lines.append(
            f"| {r['task']} | {r['size']} | {r['seq_len']} | {r['batch_size']} | "
            f"{r.get('grad_accum_steps', 1)} | {r['data_workers']} | "
            f"{r['host_batches_per_s']:.1f} | {f'{memory / 2**30:.2f}' if memory else '—'} | "
            f"{train_text} | "
            f"{ratio(headroom)} | {f'{cached:,.0f}' if cached else '—'} | "
            f"{ratio(r.get('cached_headroom'))} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attnjax bench data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="all", help="comma list of tasks (default: all)")
    parser.add_argument("--sizes", default="quickstart,lra", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--batches", type=int, default=20, help="host batches timed")
    parser.add_argument("--steps", type=int, default=5, help="train steps timed")
    parser.add_argument("--no-train", action="store_true", help="host rate only")
    parser.add_argument("--no-cache", action="store_true", help="skip the data cache's rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every measured run, e.g. grad_accum_steps=8")
    parser.add_argument("--out", default="runs/bench/data")
    args = parser.parse_args(argv)
    names = tasks.names() if args.tasks == "all" else args.tasks.split(",")
    sizes = args.sizes.split(",")
    for name in names:
        if name not in tasks.names():
            raise ConfigError(unknown_name_message("task", name, tasks.names()))
    for size in sizes:
        if size not in SIZES:
            raise ConfigError(unknown_name_message("size", size, list(SIZES)))
    rows = []
    for size in sizes:
        for name in names:
            if tasks.get(name).needs_data:
                rows.append({"task": name, "size": size, "status": "skipped",
                             "reason": "reads local files (in-memory slices)"})
                continue
            if size != "quickstart" and name not in SIZES[size]:
                continue  # no separate large size for this task
            rows.append({**measure(name, size, batches=args.batches, steps=args.steps,
                                   train=not args.no_train, cache=not args.no_cache,
                                   sets=parse_sets(args.set)),
                         "status": "ok"})
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(out / "data_benchmark.json", {
        "kind": "data", "device": str(jax.devices()[0].device_kind),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": provenance.versions(), "command": "attnjax bench data " + " ".join(
            sys.argv[3:] if argv is None else argv), "rows": rows,
    })
    print(markdown(rows))
    print(f"written: {out / 'data_benchmark.json'}")
    return 0
