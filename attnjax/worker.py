"""A worker: claims unfinished run dirs of a sweep dir one at a time and trains them.

    attnjax work SWEEP_DIR      # on any number of processes or machines sharing the filesystem

`train_run_dirs(paths)` is the whole unit of work ("train these run dirs"): it needs nothing
but the run dirs (config.json), claims them, trains or resumes them — as one pack, a single
compiled program with a replica axis, when there are several —, and releases them. Every
executor (in-process, local processes, Ray, SLURM) ends up calling it, so results do not depend
on the executor. `work(sweep_dir, pack=K)` loops: pending, preempted and stale (running, but
its worker is dead) runs are claimable; failed ones only with `retry_failed`. It takes the
first claimable run and up to K-1 others that can share its program (same config but for
steps.TRACED, resuming from the same step), trains them, and goes on until nothing is left, or
until it was preempted (told to stop). `pack="auto"` sizes K from the device's free memory.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attnjax import claim as claim_lib
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir


def claimable(run_dir: RunDir, retry_failed: bool = False) -> bool:
    """Whether a worker may take this run now (a cheap pre-check; the claim decides)."""
    status = run_dir.status() or "pending"
    if status == "done" or (status == "failed" and not retry_failed):
        return False
    return run_dir.live_holder() is None


def _config(run_dir: RunDir):
    import ml_collections

    from attnjax import config as config_lib

    raw = run_dir.read_config()
    if raw is None:
        raise ConfigError(f"{run_dir.path} holds no config.json; is it a run directory?")
    return config_lib.resolve(ml_collections.ConfigDict(raw))


def train_run_dir(path: str | Path | RunDir, *, worker: str | None = None,
                  train_fn: Callable[..., dict[str, Any]] | None = None,
                  retry_failed: bool = False) -> dict[str, Any] | None:
    """Claims, trains (or resumes) and releases one run dir; returns its summary, or None when
    it had nothing to do (done, failed without retry). ClaimHeld when a live worker has it."""
    out = train_run_dirs([path], worker=worker, train_fn=train_fn, retry_failed=retry_failed,
                         strict=True)
    return out[0][1] if out else None


def train_run_dirs(paths, *, worker: str | None = None, train_fn=None,
                   retry_failed: bool = False, strict: bool = False
                   ) -> list[tuple[RunDir, dict[str, Any]]]:
    """Claims the run dirs it can (a live holder: skipped, or ClaimHeld when `strict`), drops
    those with nothing to do, trains the rest as one pack, releases them. Returns (run dir,
    summary) of each run trained. `train_fn(config, path)` replaces the loop (tests; one by
    one)."""
    run_dirs = [p if isinstance(p, RunDir) else RunDir(p) for p in paths]
    configs = [_config(r) for r in run_dirs]
    claims, chosen = [], []
    try:
        for run_dir, config in zip(run_dirs, configs, strict=True):
            try:
                c = run_dir.claim(config.claim_timeout_s, worker)
            except claim_lib.ClaimHeld:
                if strict:
                    raise
                continue
            claims.append(c)
            status = run_dir.read_summary().get("status")  # after the claim: the truth
            if status == "done" or (status == "failed" and not retry_failed):
                continue
            chosen.append((run_dir, config, c))
        if not chosen:
            return []
        try:
            if train_fn is not None:
                return [(r, train_fn(cfg, r.path)) for r, cfg, _ in chosen]
            from attnjax.train import train_pack

            summaries = train_pack([cfg for _, cfg, _ in chosen], [r for r, _, _ in chosen],
                                   claims=[c for _, _, c in chosen])
            return [(r, s) for (r, _, _), s in zip(chosen, summaries, strict=True)]
        except BaseException as e:
            for run_dir, _, _ in chosen:
                now = run_dir.read_summary()
                if now.get("status") in ("pending", "running", None):  # nothing said why
                    run_dir.write_summary({**now, "status": "failed",
                                           "reason": f"{type(e).__name__}: {e}"[:500]})
            raise
    finally:
        for c in claims:
            c.release()


def outcome(path: str | Path) -> dict[str, Any]:
    """What became of a run dir a task was handed: its status and reason, or "held by another
    worker" when a live worker elsewhere has it."""
    run_dir = RunDir(path)
    summary = run_dir.read_summary()
    holder = run_dir.live_holder()
    if summary.get("status") != "done" and holder is not None:
        return {"status": "held by another worker", "reason": holder.describe()}
    return {"status": summary.get("status"), "reason": summary.get("reason")}


def _start_step(run_dir: RunDir) -> int:
    return int(run_dir.read_summary().get("checkpoint_step") or 0)


def pack_of(first: RunDir, candidates: list[RunDir], size: int) -> list[RunDir]:
    """`first` and up to size-1 other candidates that can share its compiled program: the same
    config but for steps.TRACED, resuming from the same step."""
    from attnjax.steps import static_signature

    if size <= 1:
        return [first]
    sig, start = static_signature(first.read_config()), _start_step(first)
    mates = [r for r in candidates if r.name != first.name
             and static_signature(r.read_config() or {}) == sig and _start_step(r) == start]
    return [first, *mates[: size - 1]]


def group_packs(run_dirs: list[RunDir], size: int) -> list[list[RunDir]]:
    """`run_dirs` split into packs of at most `size` (in order, each with `pack_of`)."""
    left, out = list(run_dirs), []
    while left:
        group = pack_of(left[0], left[1:], size)
        out.append(group)
        names = {r.name for r in group}
        left = [r for r in left if r.name not in names]
    return out


def default_pack() -> int | str:
    """"auto" on GPU/TPU (a pack is where an accelerator's speed is), 1 on CPU."""
    from attnjax import hardware

    return "auto" if hardware.accelerated() else 1


_AUTO: dict[str, int] = {}  # static signature -> K (one measuring compile per config shape)


def auto_pack_size(run_dir: RunDir, cap: int = 64) -> int:
    """Replicas that fit: 70 % of the device's free memory (host memory on CPU) over the
    compiled one-replica train step's memory; at most `cap`."""
    from attnjax import steps

    key = steps.static_signature(run_dir.read_config() or {})
    if key not in _AUTO:
        _AUTO[key] = _measure_pack_size(run_dir, cap)
    return _AUTO[key]


def _measure_pack_size(run_dir: RunDir, cap: int) -> int:
    from attnjax import hardware, steps
    from attnjax.parallel import replicate, shard

    config = _config(run_dir)
    task, _, model, devices, tx, p_train = steps.setup(config)
    batch = task.batch("train", 0, config.batch_size, config.data_seed)
    state = replicate(steps.stack([steps.init_state(config, model, tx, batch)]), devices)
    device_batch = shard({k: v[:, None] for k, v in batch.items()}, devices)
    analysis = p_train.lower(state, device_batch, steps.pack_hparams([config]),
                             steps.pack_rngs([config])).compile().memory_analysis()
    need = analysis.argument_size_in_bytes + analysis.temp_size_in_bytes
    return max(1, min(cap, int(0.7 * hardware.free_memory_bytes(devices[0]) // max(need, 1))))


def work(sweep_dir: str | Path, *, worker: str | None = None, retry_failed: bool = False,
         only: Iterable[str] | None = None, pack: int | str | None = None,
         train_fn: Callable[..., dict[str, Any]] | None = None,
         log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
         ) -> list[tuple[RunDir, dict[str, Any]]]:
    """Trains claimable runs of `sweep_dir` (or of the names in `only`) until none is left,
    in packs of at most `pack` runs ("auto": as many as fit; None: auto on an accelerator, 1 on
    CPU). Returns (run dir, summary) of each run this worker trained."""
    from attnjax.sweep import sweep_runs, write_manifest

    worker = worker or claim_lib.default_worker_id()
    pack = default_pack() if pack is None else pack
    only = set(only) if only is not None else None
    results: list[tuple[RunDir, dict[str, Any]]] = []
    skipped: set[str] = set()
    while True:
        runs = [r for r in sweep_runs(sweep_dir) if only is None or r.name in only]
        todo = [r for r in runs if r.name not in skipped and claimable(r, retry_failed)]
        if not todo:
            return results
        size = auto_pack_size(todo[0]) if pack == "auto" else int(pack)
        group = pack_of(todo[0], todo[1:], size)
        positions = ", ".join(f"{runs.index(r) + 1}" for r in group)
        label = group[0].name + (f" + {len(group) - 1} packed" if len(group) > 1 else "")
        resuming = group[0].status() not in (None, "pending")
        log(f"[{positions}/{len(runs)}] {label}" + (" (resuming)" if resuming else ""))
        try:
            trained = train_run_dirs(group, worker=worker, train_fn=train_fn,
                                     retry_failed=retry_failed)
        except KeyboardInterrupt:
            write_manifest(sweep_dir)
            raise
        except Exception:  # recorded as failed in the run dirs; the sweep goes on
            log(f"{label} failed:\n{traceback.format_exc()}")
            trained = [(r, r.read_summary()) for r in group]
        skipped.update(r.name for r in group)  # tried (or held by another worker)
        if not trained:
            continue
        results += trained
        write_manifest(sweep_dir)
        for run_dir, summary in trained:
            log(f"  {run_dir.name}: {summary.get('status')}"
                + (f" ({summary.get('reason')})" if summary.get("reason") else ""))
        if any(s.get("status") == "preempted" for _, s in trained):  # told to stop
            log(f"{worker} stops: re-run `attnjax work {sweep_dir}` (or the sweep) to resume")
            return results
