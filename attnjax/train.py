"""The single train loop: one run, or a pack of runs trained as one compiled program.

    train_and_evaluate(config, workdir)            one run (a pack of one)
    train_pack([config, ...], [workdir, ...])     K runs that differ only in traced values

The loop owns time: cadence, evaluation, checkpoints, signals, logging and each run dir's
status. The maths is in attnjax/steps.py (pure, no I/O); a pack is the same step under `vmap`,
so a packed run's run dir is exactly a lone run's (plus `pack` in summary.json naming its
pack-mates). For each run the loop:
  1. claims its run dir (attnjax/claim.py; a live holder is a ClaimHeld error naming it) and
     keeps the claim fresh while it trains;
  2. resumes from the newest checkpoint that restores (a damaged one is skipped with a warning;
     a run dir whose checkpoints vanished after one was written is refused, never retrained
     over its own history);
  3. trains, evaluates every `eval_every_steps`, checkpoints every `checkpoint_every_steps`,
     and at the end scores the validation and the held-out test split once;
  4. always leaves summary.json telling the truth: done, failed (non-finite loss — that run
     only: its pack-mates go on —, an error, disk full, out of memory) or preempted (SIGTERM /
     Ctrl-C at a step boundary, or after the grace period when a step never returns), and
     releases the claim.
Before the first step it compiles the train step (timed: compile_time_s) and compares XLA's
memory estimate with what the device (or host) has free: a step that cannot fit ends the run
`failed` with "out of memory: ..." naming the knobs that shrink it, never a dead process. Speed
is reported against the model's analytic FLOPs (3 x forward, models/budget.py): TFLOP/s and
MFU (hardware.peak_flops; none on a device it does not know) in the metrics, the summary and
the progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from attnjax import compilation_cache, data_cache, hardware, provenance
from attnjax import config as config_lib
from attnjax.claim import Claim
from attnjax.input_pipeline import DataSource, PackSource, Prefetcher
from attnjax.models.budget import budget
from attnjax.parallel import replicate, shard, unreplicate
from attnjax.rundir import RunDir, RunDirError
from attnjax.signals import StopSignals
from attnjax.steps import (
    compiled_eval,
    count_params,
    init_state,
    member,
    pack_hparams,
    pack_rngs,
    setup,
    stack,
    static_signature,
)
from attnjax.tasks.base import finalize
from attnjax.trackers import open_trackers

NOT_METRICS = ("wall_time_s", "step")
# logged with the metrics but measured, so never equal between two runs of the same config
TIMING = ("steps_per_second", "tflops_per_second", "mfu")
PLANNED_FIELDS = ("overrides", "planned_at")  # kept from the plan's summary


class ClaimLost(RuntimeError):
    """Another worker took a run over (this one stalled past the claim timeout)."""


class PackSplit(RuntimeError):
    """A pack's runs resume from different steps; they are trained one by one instead."""


class OutOfMemory(RuntimeError):
    """The train step does not fit the device (or host): its message is the run's reason."""


GIB = 2**30


def memory_info(devices, compiled=None) -> dict[str, Any]:
    """Peak memory: the device allocator's peak when the backend reports one (GPU/TPU), else
    XLA's estimate for the compiled train step (arguments + outputs + temporaries)."""
    estimate = None
    if compiled is not None:
        with contextlib.suppress(Exception):
            m = compiled.memory_analysis()
            estimate = int(m.argument_size_in_bytes + m.output_size_in_bytes
                           + m.temp_size_in_bytes - m.alias_size_in_bytes)
    stats = None
    with contextlib.suppress(Exception):
        stats = devices[0].memory_stats()
    if stats and stats.get("peak_bytes_in_use"):
        return {"peak_memory_bytes": int(stats["peak_bytes_in_use"]),
                "peak_memory_kind": "device", "compiled_memory_bytes": estimate}
    return {"peak_memory_bytes": estimate, "peak_memory_kind": "compiled" if estimate else None,
            "compiled_memory_bytes": estimate}


def _scored_positions(batch) -> int | None:
    """Positions per sequence that get logits (LM tasks with `positions`), else None."""
    return int(batch["positions"].shape[1]) if "positions" in batch else None


def _is_oom(e: BaseException) -> bool:
    """An XLA allocation failure (at compile or when a step runs)."""
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def step_needs_bytes(compiled, num_devices: int, platform: str) -> int | None:
    """Memory the compiled train step allocates beyond its inputs (which are resident by
    then): temporaries + outputs not aliased to donated inputs, per device — times the
    devices on CPU, whose devices all share the host's memory. None when XLA does not say."""
    try:
        m = compiled.memory_analysis()
        need = int(m.temp_size_in_bytes + max(m.output_size_in_bytes - m.alias_size_in_bytes,
                                                0))
    except Exception:
        return None
    return need * num_devices if platform == "cpu" else need


def oom_reason(config, needs: int | None, free: int | None, pack_size: int = 1) -> str:
    """"out of memory: needs ~X GiB, device has Y GiB free; try ..." with the knobs that apply
    to `config` (a resolved config)."""
    where = "host" if jax.local_devices()[0].platform == "cpu" else "device"
    need_text = f"needs ~{needs / GIB:.2f} GiB" if needs else "needs more memory than it has"
    free_text = f", {where} has {free / GIB:.2f} GiB free" if free is not None else ""
    knobs = [f"a smaller batch_size (now {config.batch_size})"]
    accum = _micro_batches_to_fit(config, needs, free)
    if accum:
        knobs.append(f"grad_accum_steps={accum} (now {config.grad_accum_steps}; the same update "
                     "from micro-batches, a fraction of the activation memory)")
    if pack_size > 1:
        knobs.append(f"fewer runs per pack (now {pack_size}; --pack 1)")
    # XLA:CPU (jax 0.10) keeps rematerialised activations and computes bfloat16 in float32,
    # so neither knob lowers a CPU step's memory (measured: LRA ListOps 23.17 GiB plain, 27.58
    # with remat, 23.12 in bfloat16); they are offered on accelerators only
    if where == "device" and not config.model.remat:
        knobs.append("model.remat=True")
    if where == "device" and hardware.compute_dtype(config.model.dtype) == "float32":
        knobs.append("model.dtype=bfloat16")
    implementation = config.model.attention_kwargs.get("implementation")
    if implementation not in (None, "auto", "blockwise"):
        knobs.append(f"model.attention_kwargs.implementation=auto or blockwise (now "
                     f"{implementation!r}: materialises [L, L] scores)")
    return f"out of memory: the train step {need_text}{free_text}; try {', '.join(knobs)}"


def _micro_batches_to_fit(config, needs: int | None, free: int | None) -> int | None:
    """The smallest multiple of grad_accum_steps (doubling) whose share of the step's memory fits
    `free` (activations dominate; a rough guide), within the per-device batch; None if none."""
    per_device = config.batch_size // (config.num_devices or len(jax.local_devices()))
    accum = 2 * config.grad_accum_steps
    while accum <= per_device and per_device % accum == 0:
        if not needs or not free or needs * config.grad_accum_steps / accum < 0.8 * free:
            return accum
        accum *= 2
    return None


def _free(devices) -> int | None:
    """Free bytes of the first device (the host's on CPU), None where it cannot be read."""
    try:
        return hardware.free_memory_bytes(devices[0])
    except (OSError, KeyError, ValueError):
        return None


def _fold(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of every metric in `records` (what final_metrics held at that point)."""
    out: dict[str, Any] = {}
    for r in records:
        out.update({k: v for k, v in r.items() if k not in NOT_METRICS})
    return out


def _agreed(*flags: bool) -> tuple[bool, ...]:
    """`flags` or-ed over all processes, so that every process stops at the same step (a
    SIGTERM, a step_callback or process 0's lost claim seen by one): a process that stopped
    alone would leave the others waiting in the next step's collectives. One process: as is."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    return tuple(bool(x) for x in np.max(every, axis=0))


def _disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path | RunDir,
    *,
    step_callback: Callable[[int], bool] | None = None,
    worker: str | None = None,
    claim: Claim | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run in `workdir`; resume it if it holds a checkpoint.

    `step_callback(step)` is called after every step; returning True stops the run as
    preempted (checkpoint saved), which is how schedulers and tests interrupt a run. `worker`
    names the claim holder (default: SLURM task or host:pid); `claim` is one the caller already
    holds (a worker), kept after return. Returns the final summary (also written to
    summary.json). Raises ClaimHeld when a live worker trains this run dir.
    """
    return train_pack([config], [workdir], step_callback=step_callback, worker=worker,
                      claims=None if claim is None else [claim])[0]


def train_pack(
    configs: Sequence[ml_collections.ConfigDict],
    workdirs: Sequence[str | Path | RunDir],
    *,
    step_callback: Callable[[int], bool] | None = None,
    worker: str | None = None,
    claims: Sequence[Claim] | None = None,
) -> list[dict[str, Any]]:
    """Trains K runs that differ only in traced values (steps.TRACED) as one program; returns
    their summaries in order. Runs already done are left as they are; runs that resume from
    different steps are trained one after another instead (PackSplit)."""
    compilation_cache.enable()  # a no-op after the first call (the CLI makes it)
    configs = [config_lib.resolve(c) for c in configs]
    run_dirs = [w if isinstance(w, RunDir) else RunDir(w) for w in workdirs]
    signatures = {static_signature(c.to_dict()) for c in configs}
    if len(signatures) > 1:
        raise ValueError("a pack's runs must differ only in traced values "
                         "(attnjax.steps.TRACED)")
    is_main = jax.process_index() == 0
    jsons = [config_lib.to_json(c) for c in configs]
    # only checks here, on every process (the same error everywhere, none trains alone): a
    # different config is refused before anything else
    for run_dir, text in zip(run_dirs, jsons, strict=True):
        if run_dir.read_config() is not None:
            run_dir.write_config(text, normalize=config_lib.normalize_json)
    setup_ = setup(configs[0])
    owned: list[Claim] = []
    try:
        failed = None
        if claims is None and is_main:
            try:
                for config, run_dir in zip(configs, run_dirs, strict=True):
                    owned.append(run_dir.claim(config.claim_timeout_s, worker))
            except Exception as e:  # ClaimHeld, an unwritable run dir
                failed = e
        if _agreed(failed is not None)[0]:  # the other processes give up with process 0
            raise failed or RunDirError(f"{run_dirs[0].path}: process 0 could not claim it")
        held = list(claims) if claims is not None else (owned or [None] * len(configs))
        previous = [r.read_summary() for r in run_dirs]
        todo = [i for i, p in enumerate(previous) if p.get("status") != "done"]
        results = {i: previous[i] for i in range(len(configs)) if i not in todo}
        if todo:
            if is_main:
                for i in todo:
                    run_dirs[i].write_config(jsons[i], normalize=config_lib.normalize_json)
            members = [_Member(configs[i], run_dirs[i], held[i], previous[i]) for i in todo]
            try:
                out = _Loop(members, setup_, step_callback).run()
            except PackSplit:
                out = [train_pack([m.config], [m.run_dir], step_callback=step_callback,
                                  claims=[m.claim] if m.claim else None)[0] for m in members]
            results.update(zip(todo, out, strict=True))
        return [results[i] for i in range(len(configs))]
    finally:
        for c in owned:
            c.release()


@dataclasses.dataclass(eq=False)
class _Member:
    """One run of a pack: its run dir, claim, stream, checkpoints, metrics and summary."""

    config: ml_collections.ConfigDict
    run_dir: RunDir
    claim: Claim | None
    previous: dict[str, Any]
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    alive: bool = True  # still training (not failed, claim not lost)
    wall_offset: float = 0.0
    final_at_start: frozenset = frozenset()

    @property
    def lost(self) -> bool:
        return self.claim is not None and self.claim.lost.is_set()


class _Loop:
    """K runs (K >= 1) from their start (or resume) to a final status each."""

    def __init__(self, members: list[_Member], setup_: tuple, step_callback):
        self.members = members
        self.config = members[0].config  # the static part every member shares
        (self.task, self.scored, self.model, self.devices, self.tx,
         self.p_train) = setup_
        self.step_callback = step_callback
        self.is_main = jax.process_index() == 0
        self.lock = threading.Lock()
        self.saved_step = 0
        self.pending: list[Any] = []
        self.timing = {"t": None, "step": 0, "measured_steps": 0, "measured_time": 0.0}
        self.t_start: float | None = None
        for m in members:
            m.summary = {**m.previous, "status": m.previous.get("status") or "running"}

    # ------------------------------------------------------------------ status
    def write_summary(self, m: _Member) -> None:
        if self.is_main and not m.lost:
            with self.lock:
                m.run_dir.write_summary({**m.summary, "updated_at": provenance.now()})

    def force_stop(self, reason: str) -> None:
        """Called from the signal watchdog when the loop cannot reach a step boundary."""
        for m in self.members:
            if m.summary.get("status") in ("running", "pending", None):
                m.summary.update(status="preempted", step=self.saved_step,
                                 reason=f"{reason}; resumes from step {self.saved_step}")
            with contextlib.suppress(Exception):
                self.write_summary(m)
            if m.claim is not None:
                m.claim.release()

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict[str, Any]]:
        stop = StopSignals(self.force_stop, grace_s=self.config.preempt_grace_s)
        with stop:
            try:
                try:
                    self._start()
                except PackSplit:
                    raise
                except BaseException as e:
                    for m in self.members:
                        m.summary.update(status="failed", reason=f"{type(e).__name__}: {e}")
                    raise
                if stop.requested.is_set():  # a SIGTERM during start-up
                    for m in self.members:
                        m.summary.update(status="preempted", reason="stopped before the first "
                                         f"step; resumes from step {self.saved_step}")
                else:
                    self._train(stop)
            except PackSplit:
                self._close_quietly()
                raise
            finally:
                if not getattr(self, "_closed", False):
                    self._close()
        lost = [m.run_dir.name for m in self.members if m.lost]
        if lost:
            raise ClaimLost(f"{', '.join(lost)} taken over by another worker; this one wrote "
                            "nothing after that")
        return [m.summary for m in self.members]

    def _start(self) -> None:
        config, members = self.config, self.members
        for m in members:
            if m.claim is not None:
                m.claim.start_heartbeat(max(0.2, min(30.0, config.claim_timeout_s / 4)))
            m.data = DataSource(self.task, "train", config.batch_size, m.config.data_seed,
                                train_examples=config.train_examples)
        init_batch = members[0].data.host_batch(0)
        states, starts = [], []
        for m in members:
            state = init_state(m.config, self.model, self.tx, init_batch)
            m.checkpointer = m.run_dir.checkpointer(keep=config.keep_checkpoints)
            start, state = self._restore(m, state)
            states.append(state)
            starts.append(start)
        if len(set(starts)) > 1:
            raise PackSplit(f"pack members resume from steps {starts}")
        start_step = starts[0]
        self.saved_step = self.start_step = self.step = start_step
        self.timing["step"] = start_step
        self.states = states
        names = [m.run_dir.name for m in members]
        costs = budget(config.model, self.task, _scored_positions(init_batch))
        self.dtype = hardware.compute_dtype(config.model.dtype)
        # the program's model FLOPs per step: forward + backward (2x) of every run of the pack
        self.model_flops = (3.0 * costs["flops_per_token"] * config.batch_size
                            * self.task.max_length * len(members))
        self.peak = hardware.peak_flops(self.devices[0].device_kind, self.dtype)
        self.num_devices = len(self.devices) * jax.process_count()
        common = {
            "status": "running", "reason": None, "step": start_step,
            "checkpoint_step": start_step or None, "num_train_steps": config.num_train_steps,
            "num_params": count_params(states[0].params),
            "attention": config.model.attention, "task": config.task.name,
            **costs, "compute_dtype": self.dtype, "model_flops_per_step": self.model_flops,
            "peak_flops_per_device": self.peak,
            "versions": provenance.versions(), "device": provenance.device_info(len(self.devices)),
            "git_revision": provenance.git_revision(),
        }
        for m in members:
            # every process reads what was logged (processes take the same decisions from it)
            kept = (m.run_dir.truncate_metrics(start_step) if self.is_main else
                    [r for r in m.run_dir.read_metrics() if r.get("step", 0) <= start_step])
            m.wall_offset = max([float(r.get("wall_time_s", 0.0)) for r in kept] + [0.0])
            m.final_at_start = frozenset(k for r in kept if r.get("step") ==
                                         config.num_train_steps for k in r)
            m.summary = {
                **{k: m.previous[k] for k in PLANNED_FIELDS if k in m.previous}, **common,
                "started_at": m.previous.get("started_at") or provenance.now(),
                "final_metrics": _fold(kept), "worker": m.claim.worker if m.claim else None,
            }
            if len(members) > 1:
                m.summary["pack"] = [n for n in names if n != m.run_dir.name]
            self.write_summary(m)

    def _restore(self, m: _Member, state) -> tuple[int, Any]:
        restored = m.checkpointer.restore_latest(state)
        if restored is None:
            if m.previous.get("checkpoint_step"):
                raise RunDirError(
                    f"{m.run_dir.path}: summary.json says a checkpoint was saved at step "
                    f"{m.previous['checkpoint_step']}, but none restores from "
                    f"{m.run_dir.checkpoints}; refusing to retrain over its history (delete the "
                    "run dir to start over)")
            return 0, state
        step, state, data_state = restored
        expected = m.data.state(step)
        if data_state.get("legacy"):  # an older checkpoint: its position is its step
            expected = {"next_index": step}
        if {k: data_state.get(k) for k in expected} != expected:
            raise RunDirError(f"{m.run_dir.path}: the checkpoint at step {step} holds data "
                              f"position {data_state}, expected {expected}")
        return step, state

    def _cached(self, source: DataSource, start: int, stop: int):
        """`source` reading [start, stop) from the on-disk data cache (filled first)."""
        return data_cache.cached(source, start, stop, workers=self.config.data_workers,
                                 progress=self.is_main and self.config.progress_bar)

    def wall(self, m: _Member) -> float:
        return m.wall_offset + (time.time() - self.t_start if self.t_start else 0.0)

    def _train(self, stop: StopSignals) -> None:
        config, devices, members = self.config, self.devices, self.members
        for m in members:  # a member's own config: trackers may differ within a pack
            m.trackers = open_trackers(m.config, m.run_dir, enabled=self.is_main)
        workers = config.data_workers
        if config.data_cache:  # generate the train stream once, then read it memory-mapped
            for m in members:
                m.data = self._cached(m.data, self.start_step, config.num_train_steps)
            if all(isinstance(m.data, data_cache.CachedSource) for m in members):
                workers = 0  # reading is faster than handing batches between processes
        self.eval_sets = self.scored_sets("eval", config.num_eval_batches)
        hparams = pack_hparams([m.config for m in members])
        rngs = pack_rngs([m.config for m in members])
        self.t_start = time.time()
        name = members[0].run_dir.name + (f" (+{len(members) - 1})" if len(members) > 1 else "")
        self.bar = tqdm(total=config.num_train_steps, initial=self.start_step, disable=not (
            self.is_main and config.progress_bar), desc=name, unit="step", dynamic_ncols=True,
            leave=True)
        self.state = replicate(stack(self.states), devices)  # [D, K, ...]
        del self.states
        self.batches = Prefetcher(PackSource(tuple(m.data for m in members)), self.start_step,
                                  config.num_train_steps, put=lambda b: shard(b, devices),
                                  depth=config.prefetch_batches, workers=workers)
        first = True
        try:
            for index, batch in self.batches:
                if index != self.step:
                    raise RuntimeError(f"train data at index {index} for step {self.step}")
                if first:  # compile, check the memory, run, measure
                    metrics, first = self._first_step(batch, hparams, rngs), False
                else:
                    self.state, metrics = self.p_train(self.state, batch, hparams, rngs)
                self.pending.append(metrics)
                self.step += 1
                self.bar.update(1)
                lost = [m.alive and m.lost for m in members]
                stopping = stop.requested.is_set() or bool(
                    self.step_callback and self.step_callback(self.step))
                *lost, stopping = _agreed(*lost, stopping)
                for m, gone in zip(members, lost, strict=True):
                    if gone:
                        m.alive = False
                self.cadence(self.step, stopping)
                if not any(m.alive for m in members):
                    return
                if stopping:
                    for m in self.alive():
                        m.summary.update(status="preempted", reason=f"stopped at step {self.step}")
                    return
            if self.step < config.num_train_steps:
                raise RuntimeError(f"the train data ended at step {self.step}")
            if self.start_step == config.num_train_steps:  # resumed at the last checkpoint
                self.finish(self.step)
            for m in self.alive():
                m.summary["status"] = "done"
        except KeyboardInterrupt:
            for m in self.alive():
                m.summary.update(status="preempted", reason=f"interrupted at step {self.step}",
                                 step=self.saved_step)
            raise
        except BaseException as e:
            where = "disk full at step" if _disk_full(e) else "at step"
            reason = str(e) if isinstance(e, OutOfMemory) else (
                f"{type(e).__name__} {where} {self.step}: "
                f"{str(e).splitlines()[0] if str(e) else ''}")
            for m in self.alive():
                m.summary.update(status="failed", reason=reason, step=self.step)
            raise

    def _first_step(self, batch, hparams, rngs):
        """Compiles the train step (timed), refuses it when XLA's estimate of its memory
        exceeds what the device has free (OutOfMemory), runs it; returns its metrics. An
        allocation failure at compile or in the step is an OutOfMemory too."""
        config, devices = self.config, self.devices
        args = (self.state, batch, hparams, rngs)
        start = time.perf_counter()
        try:
            compiled = self.p_train.lower(*args).compile()
        except Exception as e:
            if _is_oom(e):
                raise OutOfMemory(oom_reason(config, None, _free(devices), len(self.members))
                                  ) from e
            raise
        compile_time = time.perf_counter() - start
        needs = step_needs_bytes(compiled, len(devices), devices[0].platform)
        free = _free(devices)
        if needs is not None and free is not None and needs > free:
            raise OutOfMemory(oom_reason(config, needs, free, len(self.members)))
        try:
            self.state, metrics = self.p_train(*args)  # the program compiled above (cached)
            jax.block_until_ready(metrics)  # an allocation failure surfaces here
        except Exception as e:
            if _is_oom(e):
                raise OutOfMemory(oom_reason(config, needs, _free(devices), len(self.members))
                                  ) from e
            raise
        memory = memory_info(devices, compiled)
        for m in self.members:
            m.summary.update(memory, compile_time_s=compile_time)
        return metrics

    def speed(self, steps_per_second: float | None) -> dict[str, float]:
        """{"tflops_per_second", "mfu" (when the peak is known)} at this step rate."""
        if not steps_per_second:
            return {}
        achieved = self.model_flops * steps_per_second
        out = {"tflops_per_second": achieved / hardware.TERA}
        if self.peak:
            out["mfu"] = achieved / (self.peak * self.num_devices)
        return out

    def alive(self) -> list[_Member]:
        return [m for m in self.members if m.alive]

    def cadence(self, step: int, stopping: bool) -> None:
        """Logging, evaluation and checkpoints after `step`."""
        config = self.config
        last = step == config.num_train_steps
        if stopping or last or step % config.log_every_steps == 0:
            self.flush_train(step)
            for m in self.alive():
                m.summary["step"] = step
                self.write_summary(m)
        if last:
            self.finish(step)
        elif step % config.eval_every_steps == 0:
            self.evaluate(step, self.eval_sets)
        if stopping or last or step % config.checkpoint_every_steps == 0:
            self.flush_train(step)  # never checkpoint a non-finite state
            host = unreplicate(self.state)  # [K, ...]
            for i, m in enumerate(self.members):
                if m.alive:
                    m.checkpointer.save(step, member(host, i), m.data.state(step))
                    m.summary.update(step=step, checkpoint_step=step)
                    self.write_summary(m)
            self.saved_step = step

    def flush_train(self, step: int) -> None:
        """Log each run's mean of pending train metrics; a run whose loss went non-finite
        fails at its first bad step (its pack-mates go on)."""
        if not self.pending:
            return
        host = jax.device_get([unreplicate(m) for m in self.pending])  # leaves [K]
        now, timing = time.time(), self.timing
        rate = None
        if timing["t"] is not None:  # the first interval holds compilation: not a rate
            dt, ds = now - timing["t"], step - timing["step"]
            timing["measured_steps"] += ds
            timing["measured_time"] += dt
            rate = ds / dt
        timing["t"], timing["step"] = now, step
        self.pending.clear()
        for i, m in enumerate(self.members):
            if not m.alive:
                continue
            mine = [member(h, i) for h in host]
            bad = next((j for j, h in enumerate(mine) if not math.isfinite(
                float(h["loss"][0] / max(float(h["loss"][1]), 1e-12)))), None)
            if bad is not None:
                at = step - len(mine) + bad + 1
                loss = float(mine[bad]["loss"][0] / max(float(mine[bad]["loss"][1]), 1e-12))
                m.alive = False
                m.summary.update(status="failed", step=at,
                                 reason=f"non-finite loss ({loss}) at step {at}")
                self.write_summary(m)
                continue
            sums = jax.tree.map(lambda *xs: np.sum(xs), *mine)
            scalars = {f"train/{k}": v for k, v in finalize(sums).items()}
            scalars["train/learning_rate"] = float(mine[-1]["learning_rate"][0])
            if rate is not None:
                scalars["steps_per_second"] = rate
                scalars.update(self.speed(rate))
            self.log(m, step, scalars)
        first = next(iter(self.alive()), None)
        if first is not None:
            fm = first.summary["final_metrics"]
            postfix = {"loss": f"{fm.get('train/loss', float('nan')):.3f}",
                       "acc": f"{fm.get('train/accuracy', float('nan')):.3f}"}
            speed = self.speed(rate)
            if speed:
                postfix["TFLOP/s"] = f"{speed['tflops_per_second']:.3g}"
            if "mfu" in speed:
                postfix["MFU"] = f"{100 * speed['mfu']:.1f}%"
            self.bar.set_postfix(postfix)

    def log(self, m: _Member, step: int, scalars: dict[str, Any]) -> None:
        m.trackers.log(step, {**scalars, "wall_time_s": self.wall(m)})
        m.summary["final_metrics"].update(scalars)

    def scored_sets(self, split: str, num_batches: int) -> dict[tuple[str, ...], tuple]:
        """{prefixes: (pack eval step, device batches)} for `split` at every length. The
        examples are the same for every run (fixed validation and test sets)."""
        out, config = {}, self.config
        for prefixes, t in self.scored.items():
            source = DataSource(t, split, config.batch_size, config.data_seed)
            if config.data_cache:
                source = self._cached(source, 0, num_batches)
            out[tuple(p.replace("eval", split, 1) for p in prefixes)] = (
                compiled_eval(self.model, t, self.devices),
                [shard(source.host_batch(i), self.devices) for i in range(num_batches)])
        return out

    def evaluate(self, step: int, sets: dict[tuple[str, ...], tuple],
                 only: Callable[[_Member], bool] = lambda m: True) -> None:
        chosen = [(i, m) for i, m in enumerate(self.members) if m.alive and only(m)]
        if not chosen:
            return
        scalars: list[dict[str, Any]] = [{} for _ in self.members]
        for prefixes, (p_eval, batches) in sets.items():
            totals = None
            for b in batches:
                out = jax.device_get(unreplicate(p_eval(self.state.params, b)))  # leaves [K]
                totals = out if totals is None else jax.tree.map(np.add, totals, out)
            for i, _ in chosen:
                values = finalize(member(totals, i))
                scalars[i].update({f"{p}/{k}": v for p in prefixes for k, v in values.items()})
        for i, m in chosen:
            if scalars[i]:
                self.log(m, step, scalars[i])

    def finish(self, step: int) -> None:
        """The last evaluation, then the test set (scored once, never used for selection).
        A resumed run whose metrics.jsonl already holds either at this step skips it."""
        self.evaluate(step, self.eval_sets, only=lambda m: "eval/loss" not in m.final_at_start)
        if self.config.num_test_batches:
            untested = lambda m: not any(k.startswith("test/") for k in m.final_at_start)
            if any(untested(m) for m in self.alive()):
                self.evaluate(step, self.scored_sets("test", self.config.num_test_batches),
                              only=untested)

    def _close_quietly(self) -> None:
        """Closes what start-up opened, writing nothing (the pack is split, not failed)."""
        self._closed = True
        for m in self.members:
            with contextlib.suppress(Exception):
                m.checkpointer.close()

    def _close(self) -> None:
        """Every cleanup step guarded, so that each summary.json is written if it can be."""
        self._closed = True
        problems = []
        shared = (("the data pipeline", lambda: self.batches.close()),
                  ("the progress bar", lambda: self.bar.close()))
        each = [(m, what, fn) for m in self.members for what, fn in (
            ("the trackers", lambda m=m: m.trackers.close()),
            ("the checkpointer", lambda m=m: m.checkpointer.close()))]
        for m, what, close in [(None, w, f) for w, f in shared] + each:
            try:
                close()
            except AttributeError:  # never opened (start-up failed before it)
                pass
            except Exception as e:
                problems.append((m, what, e))
        measured = self.timing["measured_time"]
        rate = self.timing["measured_steps"] / measured if measured else None
        peak = None
        if self.members[0].summary.get("peak_memory_kind") == "device":
            peak = memory_info(self.devices)["peak_memory_bytes"]  # evals included
        for m in self.members:
            summary = m.summary
            for who, what, e in problems:
                if (who is None or who is m) and summary["status"] in (
                        "running", "done", "preempted"):
                    full = "disk full" if _disk_full(e) else f"{type(e).__name__}"
                    summary.update(status="failed", reason=f"{full} while closing {what} at "
                                   f"step {self.step if hasattr(self, 'step') else 0}: {e}")
            if peak is not None:
                summary["peak_memory_bytes"] = peak
            speed = self.speed(rate) if hasattr(self, "model_flops") else {}
            summary.update(
                wall_time_s=self.wall(m), steps_per_second=rate,
                tokens_per_second=rate * self.config.batch_size * self.task.max_length
                if rate else None, tflops_per_second=speed.get("tflops_per_second"),
                mfu=speed.get("mfu"))
            if summary["status"] == "running":  # an exception is on its way up
                summary.update(status="failed", reason=summary.get("reason") or "crashed")
            try:
                self.write_summary(m)
            except OSError as e:  # e.g. the disk is full: the shortest summary may still fit
                short = {"status": "failed", "step": summary.get("step"),
                         "reason": f"{'disk full' if _disk_full(e) else type(e).__name__} "
                                   f"writing summary.json at step {summary.get('step')}"}
                with contextlib.suppress(OSError):
                    m.run_dir.write_summary(short)
                raise
