"""The `attnjax` command (what ./launch.sh calls).

    attnjax run CONFIG.py [--workdir DIR] [--multihost] [--config.KEY=VALUE ...]   one run
    attnjax sweep EXPERIMENT.py [--workdir DIR] [--workers N | --executor ray|slurm] [--plan]
    attnjax work SWEEP_DIR [--worker-id ID]                         a worker: claims runs
    attnjax status SWEEP_DIR [--format json]                        who trains what, totals
    attnjax compare DIR [DIR ...] [--out DIR]                       tables + report
    attnjax variants [--format markdown|json]                       attention capabilities
    attnjax tasks [--format markdown|json]                          tasks and their settings
    attnjax heatmap RUN_DIR [--out DIR] [--example N]                attention weights per head
    attnjax bench attention|data|train|... [options]                speed/memory benchmarks

Exit codes: 0 success; 1 a run failed or was preempted; 2 bad input (nothing was written).
Compiled programs are cached on disk (ATTNJAX_COMPILATION_CACHE: a directory, or "off").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from attnjax.registry import ConfigError

USAGE = __doc__


def _parse_run_config(config_file: str, overrides: list[str]):
    """The config of `CONFIG.py` with absl `config_flags` overrides, resolved (validated)."""
    from absl import flags
    from ml_collections import config_flags

    from attnjax import config as config_lib

    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise ConfigError(f"unexpected arguments {bad}; overrides look like --config.KEY=VALUE")
    path, _, arg = config_file.partition(":")
    config_lib.load_config_file(path, arg or None)  # one clear line for a missing/broken file
    argv = ["attnjax", f"--config={config_file}", *overrides]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "config file", flag_values=fv, lock_config=False,
        accept_new_attributes=True, sys_argv=argv,
    )
    try:
        fv(argv)
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"bad override: {e}") from None
    return config_lib.resolve(fv.config)


def _default_run_dir(config_file: str, overrides: list[str]) -> Path:
    from attnjax.sweep import run_name

    pairs = dict(o[len("--config."):].split("=", 1) for o in overrides if "=" in o)
    name = run_name(pairs, list(pairs)) if pairs else "default"
    return Path("runs") / Path(config_file.split(":", 1)[0]).stem / name


def cmd_run(args, overrides: list[str]) -> int:
    from attnjax import distributed

    if args.multihost or distributed.detected():
        distributed.initialize()  # before anything touches jax's backend
    from attnjax.train import OutOfMemory, train_and_evaluate

    config = _parse_run_config(args.config, overrides)
    workdir = Path(args.workdir) if args.workdir else _default_run_dir(args.config, overrides)
    try:
        summary = train_and_evaluate(config, workdir)
    except OutOfMemory as e:  # recorded as failed in the run dir; no traceback
        print(f"error: {e}\nrun dir: {workdir}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary.get(k) for k in ("status", "reason", "step")}))
    print(json.dumps(summary.get("final_metrics", {}), indent=2, sort_keys=True))
    print(f"run dir: {workdir}")
    return 0 if summary.get("status") == "done" else 1


PACK_HELP = ("train up to K runs that differ only in seed / learning rate / weight decay / "
             "warmup as one compiled program (K or 'auto': as many as fit in memory; default "
             "auto on GPU/TPU, 1 on CPU)")


def _pack_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pack takes a number or 'auto', not {text!r}"
                                         ) from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"--pack must be >= 1, got {k}")
    return k


EXECUTOR_FLAGS = ("ray_address", "gpus_per_run", "cpus_per_run", "partition", "time_min",
                  "array_parallelism", "cluster")


def _executor_choice(args, experiment) -> tuple[str, dict]:
    """(executor name, options) from the flags, over the experiment file's `executor` block
    ({"name": "slurm", "partition": ..., ...}; flags win; --executor naming another executor
    sets the block aside, since its options are that executor's)."""
    block = dict(getattr(experiment, "executor", None) or {})
    if args.executor and block.get("name") not in (None, args.executor):
        block = {}
    name = args.executor or block.pop("name", None) or (
        "local" if (args.workers or 1) > 1 else "inprocess")
    block.pop("name", None)
    options = {**block, **{k: getattr(args, k) for k in EXECUTOR_FLAGS
                           if getattr(args, k) is not None}}
    if args.workers is not None and name != "inprocess":
        options["workers"] = args.workers
    if args.retry_failed:
        options["retry_failed"] = True
    if args.pack is not None:
        options["pack"] = args.pack
    if name == "inprocess" and args.workers not in (None, 1):
        raise ConfigError("--workers N needs the local executor (drop --executor inprocess)")
    return name, options


def cmd_sweep(args, extra: list[str]) -> int:
    if extra:
        raise ConfigError(f"unexpected arguments {extra}")
    from attnjax import compare, executors
    from attnjax.sweep import default_workdir, load_experiment, plan, run_sweep, sweep_runs

    workdir = Path(args.workdir or default_workdir(args.experiment))
    name, options = _executor_choice(args, load_experiment(args.experiment))
    if args.plan:
        executor = executors.create(name, **options)
        run_dirs = plan(args.experiment, workdir, devices_per_run=executor.devices_per_run())
        print(f"planned {len(run_dirs)} runs in {workdir}. Start workers (any number, any "
              f"machine sharing this filesystem):\n  ./launch.sh work {workdir}\n"
              f"Progress: ./launch.sh status {workdir}")
        return 0
    run_sweep(args.experiment, workdir, executor=name, options=options)
    table, report = compare.write_report([workdir], workdir)
    print(table)
    print(f"\nreport: {report}")
    bad = [r.name for r in sweep_runs(workdir) if r.status() != "done"]
    if bad:
        print(f"not done: {', '.join(bad)} (./launch.sh status {workdir})", file=sys.stderr)
    return 1 if bad else 0


def cmd_work(args, extra: list[str]) -> int:
    if extra:
        raise ConfigError(f"unexpected arguments {extra}")
    from attnjax.sweep import sweep_runs
    from attnjax.worker import work

    sweep_runs(args.sweep_dir)  # a clear error for a missing directory
    results = work(args.sweep_dir, worker=args.worker_id, retry_failed=args.retry_failed,
                   pack=args.pack)
    print(f"trained {len(results)} runs; nothing left to claim in {args.sweep_dir}"
          if not any(s.get("status") == "preempted" for _, s in results)
          else "preempted: run the same command to resume")
    return 1 if any(s.get("status") == "preempted" for _, s in results) else 0


def cmd_status(args, extra: list[str]) -> int:
    if extra:
        raise ConfigError(f"unexpected arguments {extra}")
    from attnjax import status

    rows = status.rows(args.sweep_dir)
    print(json.dumps(rows, indent=2) if args.format == "json" else status.table(rows))
    return 0


def _print_catalogue(module_name: str, rows_fn: str, args, extra: list[str]) -> int:
    """`variants` and `tasks`: a catalogue's rows as markdown (its doc) or JSON."""
    if extra:
        raise ConfigError(f"unexpected arguments {extra}")
    import importlib

    module = importlib.import_module(f"attnjax.{module_name}")
    rows = getattr(module, rows_fn)()
    print(json.dumps(rows, indent=2) if args.format == "json" else module.markdown(rows),
          end="\n" if args.format == "json" else "")
    return 0


def cmd_variants(args, extra: list[str]) -> int:
    return _print_catalogue("variants", "matrix", args, extra)


def cmd_tasks(args, extra: list[str]) -> int:
    return _print_catalogue("task_catalog", "rows", args, extra)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="attnjax", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="one training run")
    p.add_argument("config", help="config file, e.g. configs/mqar.py (or configs/x.py:arg)")
    p.add_argument("--workdir", help="run dir (default runs/<config>/<overrides>)")
    p.add_argument("--multihost", action="store_true", help="one run over several hosts: "
                   "jax.distributed.initialize() (automatic under SLURM / TPU pods)")
    p = sub.add_parser("sweep", help="every run of an experiment; re-run to resume")
    p.add_argument("experiment", help="experiment file, e.g. experiments/quickstart.py "
                   "(file.py:arg passes arg to its get_config and sweep)")
    p.add_argument("--workdir", help="sweep dir (default runs/<experiment>)")
    p.add_argument("--workers", type=int, help="local worker processes (default 1: this one)")
    p.add_argument("--plan", action="store_true",
                   help="write every run dir (pending) and the manifest, train nothing")
    p.add_argument("--executor", help="inprocess | local | ray | slurm (default: inprocess, "
                   "local with --workers N)")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p.add_argument("--pack", type=_pack_size, help=PACK_HELP)
    g = p.add_argument_group("ray / slurm")
    g.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    g.add_argument("--gpus-per-run", type=float, help="GPUs per run (Ray task / SLURM task)")
    g.add_argument("--cpus-per-run", type=float, help="CPUs per run (Ray task / SLURM task)")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time-min", type=int, help="SLURM time limit per task, minutes")
    g.add_argument("--array-parallelism", type=int, help="SLURM array tasks at once")
    g.add_argument("--cluster", help="submitit cluster: slurm (default) | local | debug")
    p = sub.add_parser("work", help="a worker: claims and trains runs of a sweep dir")
    p.add_argument("sweep_dir")
    p.add_argument("--worker-id", help="names this worker in claims (default host:pid, or the "
                   "SLURM task)")
    p.add_argument("--retry-failed", action="store_true", help="train failed runs again")
    p.add_argument("--pack", type=_pack_size, help=PACK_HELP)
    p = sub.add_parser("status", help="status of every run of a sweep dir")
    p.add_argument("sweep_dir")
    p.add_argument("--format", choices=("table", "json"), default="table")
    sub.add_parser("compare", help="tables and report for run dirs", add_help=False)
    p = sub.add_parser("variants", help="attention variants and their capabilities")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p = sub.add_parser("tasks", help="tasks, their heads and settings")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")

    sub.add_parser("heatmap", help="attention heatmaps from a run's checkpoint", add_help=False)
    sub.add_parser("bench", help="benchmarks: attention speed/memory, data rate", add_help=False)

    if argv and argv[0] in ("run", "sweep", "work", "bench"):  # commands that compile
        from attnjax import compilation_cache

        compilation_cache.enable()
    # subcommands with their own argument parsers
    if argv and argv[0] in ("compare", "heatmap", "bench"):
        import importlib

        module = {"compare": "compare", "heatmap": "heatmaps", "bench": "bench"}[argv[0]]
        try:
            return importlib.import_module(f"attnjax.{module}").main(argv[1:])
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    args, extra = parser.parse_known_args(argv)
    handler = {"run": cmd_run, "sweep": cmd_sweep, "work": cmd_work, "status": cmd_status,
               "variants": cmd_variants, "tasks": cmd_tasks}[args.command]
    try:
        return handler(args, extra)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
