"""The single train loop: `train_and_evaluate(config, workdir)`. Tasks differ by data only.

The loop owns time: cadence, evaluation, checkpoints, signals, logging and the run dir's status.
The maths is in attnjax/steps.py (pure, no I/O). A run:
  1. claims its run dir (attnjax/claim.py; a live holder is a ClaimHeld error naming it) and
     keeps the claim fresh while it trains;
  2. resumes from the newest checkpoint that restores (a damaged one is skipped with a warning;
     a run dir whose checkpoints vanished after one was written is refused, never retrained
     over its own history);
  3. trains, evaluates every `eval_every_steps`, checkpoints every `checkpoint_every_steps`,
     and at the end scores the validation and the held-out test split once;
  4. always leaves summary.json telling the truth: done, failed (non-finite loss, an error,
     disk full) or preempted (SIGTERM / Ctrl-C at a step boundary, or after the grace period
     when a step never returns), and releases the claim.
"""

from __future__ import annotations

import contextlib
import errno
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from attnjax import config as config_lib
from attnjax import provenance
from attnjax.claim import Claim
from attnjax.input_pipeline import DataSource, Prefetcher
from attnjax.metric_writers import MetricWriter
from attnjax.models.budget import budget
from attnjax.parallel import replicate, shard, unreplicate
from attnjax.rundir import RunDir, RunDirError
from attnjax.signals import StopSignals
from attnjax.steps import compiled_eval, count_params, hparams_from, init_state, setup
from attnjax.tasks.base import finalize

NOT_METRICS = ("wall_time_s", "step")
PLANNED_FIELDS = ("overrides", "planned_at")  # kept from the plan's summary


class NonFiniteLoss(RuntimeError):
    pass


class ClaimLost(RuntimeError):
    """Another worker took this run over (this one stalled past the claim timeout)."""


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


def _lowered(p_train, *args):
    """The compiled train step for these arguments (cached: no second compile), or None."""
    try:
        return p_train.lower(*args).compile()
    except Exception:
        return None


def _fold(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest value of every metric in `records` (what final_metrics held at that point)."""
    out: dict[str, Any] = {}
    for r in records:
        out.update({k: v for k, v in r.items() if k not in NOT_METRICS})
    return out


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
    config = config_lib.resolve(config)
    run_dir = workdir if isinstance(workdir, RunDir) else RunDir(workdir)
    is_main = jax.process_index() == 0
    config_json = config_lib.to_json(config)
    if is_main and run_dir.read_config() is not None:
        run_dir.write_config(config_json)  # only checks: a different config is refused
    task, scored, model, devices, tx, p_train = setup(config)
    own_claim = claim is None and is_main
    if own_claim:
        claim = run_dir.claim(config.claim_timeout_s, worker)
    try:
        summary = run_dir.read_summary()
        if summary.get("status") == "done":
            return summary
        if is_main:
            run_dir.write_config(config_json)
        return _Loop(config, run_dir, claim, summary, task, scored, model, devices, tx,
                     p_train, step_callback).run()
    finally:
        if own_claim:
            claim.release()


class _Loop:
    """One run from its start (or resume) to a final status; see the module docstring."""

    def __init__(self, config, run_dir, claim, previous, task, scored, model, devices, tx,
                 p_train, step_callback):
        self.config, self.run_dir, self.claim = config, run_dir, claim
        self.task, self.scored, self.model, self.devices = task, scored, model, devices
        self.tx, self.p_train, self.step_callback = tx, p_train, step_callback
        self.previous = previous
        self.is_main = jax.process_index() == 0
        self.lock = threading.Lock()
        self.saved_step = 0
        self.wall_offset = 0.0
        self.pending: list[Any] = []
        self.timing = {"t": None, "step": 0, "measured_steps": 0, "measured_time": 0.0}

    # ------------------------------------------------------------------ status
    def write_summary(self) -> None:
        if self.is_main and not (self.claim is not None and self.claim.lost.is_set()):
            with self.lock:
                self.run_dir.write_summary({**self.summary, "updated_at": provenance.now()})

    def force_stop(self, reason: str) -> None:
        """Called from the signal watchdog when the loop cannot reach a step boundary."""
        self.summary.update(status="preempted", step=self.saved_step,
                            reason=f"{reason}; resumes from step {self.saved_step}")
        with contextlib.suppress(Exception):
            self.write_summary()
        if self.claim is not None:
            self.claim.release()

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        stop = StopSignals(self.force_stop, grace_s=self.config.preempt_grace_s)
        self.summary = {**self.previous, "status": self.previous.get("status") or "running"}
        with stop:
            try:
                try:
                    self._start()
                except BaseException as e:
                    self.summary.update(status="failed", reason=f"{type(e).__name__}: {e}")
                    raise
                if stop.requested.is_set():  # a SIGTERM during start-up
                    self.summary.update(status="preempted", reason="stopped before the first "
                                        f"step; resumes from step {self.saved_step}")
                else:
                    self._train(stop)
            finally:
                self._close()
        if self.claim is not None and self.claim.lost.is_set():
            raise ClaimLost(f"{self.run_dir.path} was taken over by another worker; this one "
                            "wrote nothing after that")
        return self.summary

    def _start(self) -> None:
        config, run_dir = self.config, self.run_dir
        if self.claim is not None:
            self.claim.start_heartbeat(max(0.2, min(30.0, config.claim_timeout_s / 4)))
        self.train_data = DataSource(self.task, "train", config.batch_size, config.seed)
        init_batch = self.train_data.host_batch(0)
        state = init_state(config, self.model, self.tx, init_batch)
        self.checkpointer = run_dir.checkpointer(keep=config.keep_checkpoints)
        start_step = 0
        restored = self.checkpointer.restore_latest(state)
        if restored is not None:
            start_step, state, data_state = restored
            expected = self.train_data.state(start_step)
            if data_state.get("legacy"):  # an older checkpoint: its position is its step
                expected = {"next_index": start_step}
            if {k: data_state.get(k) for k in expected} != expected:
                raise RunDirError(f"{run_dir.path}: the checkpoint at step {start_step} holds "
                                  f"data position {data_state}, expected {expected}")
        elif self.previous.get("checkpoint_step"):
            raise RunDirError(
                f"{run_dir.path}: summary.json says a checkpoint was saved at step "
                f"{self.previous['checkpoint_step']}, but none restores from "
                f"{run_dir.checkpoints}; refusing to retrain over its history (delete the run "
                "dir to start over)")
        self.saved_step = start_step
        kept = run_dir.truncate_metrics(start_step) if self.is_main else []
        self.wall_offset = max([float(r.get("wall_time_s", 0.0)) for r in kept] + [0.0])
        self.final_at_start = {k for r in kept if r.get("step") == config.num_train_steps
                               for k in r}
        self.state = state
        self.start_step = self.step = start_step
        self.timing["step"] = start_step
        self.summary = {
            **{k: self.previous[k] for k in PLANNED_FIELDS if k in self.previous},
            "status": "running", "reason": None, "step": start_step,
            "checkpoint_step": start_step or None,
            "num_train_steps": config.num_train_steps, "num_params": count_params(state.params),
            "attention": config.model.attention, "task": config.task.name,
            **budget(config.model, self.task, _scored_positions(init_batch)),
            "started_at": self.previous.get("started_at") or provenance.now(),
            "versions": provenance.versions(), "device": provenance.device_info(len(self.devices)),
            "git_revision": provenance.git_revision(), "final_metrics": _fold(kept),
            "worker": self.claim.worker if self.claim else None,
        }
        self.write_summary()

    def wall(self) -> float:
        return self.wall_offset + time.time() - self.t_start

    def _train(self, stop: StopSignals) -> None:
        config, devices = self.config, self.devices
        self.writer = MetricWriter(self.run_dir, enabled=self.is_main)
        self.eval_sets = self.scored_sets("eval", config.num_eval_batches)
        hparams, base_rng = hparams_from(config), jax.random.PRNGKey(config.seed)
        self.t_start = time.time()
        self.bar = tqdm(total=config.num_train_steps, initial=self.start_step, disable=not (
            self.is_main and config.progress_bar), desc=self.run_dir.name, unit="step",
            dynamic_ncols=True, leave=True)
        self.state = replicate(self.state, devices)
        self.batches = Prefetcher(self.train_data, self.start_step, config.num_train_steps,
                                  put=lambda b: shard(b, devices), depth=config.prefetch_batches,
                                  workers=config.data_workers)
        summary = self.summary
        try:
            for index, batch in self.batches:
                if index != self.step:
                    raise RuntimeError(f"train data at index {index} for step {self.step}")
                self.state, metrics = self.p_train(self.state, batch, hparams, base_rng)
                if "peak_memory_kind" not in summary:
                    summary.update(memory_info(devices, _lowered(
                        self.p_train, self.state, batch, hparams, base_rng)))
                self.pending.append(metrics)
                self.step += 1
                self.bar.update(1)
                lost = self.claim is not None and self.claim.lost.is_set()
                stopping = lost or stop.requested.is_set() or bool(
                    self.step_callback and self.step_callback(self.step))
                if lost:
                    return
                self.cadence(self.step, stopping)
                if stopping:
                    summary.update(status="preempted", reason=f"stopped at step {self.step}")
                    return
            if self.step < config.num_train_steps:
                raise RuntimeError(f"the train data ended at step {self.step}")
            if self.start_step == config.num_train_steps:  # resumed at the last checkpoint
                self.finish(self.step)
            summary["status"] = "done"
        except NonFiniteLoss as e:
            summary.update(status="failed", reason=str(e), step=self.step)
        except KeyboardInterrupt:
            summary.update(status="preempted", reason=f"interrupted at step {self.step}",
                           step=self.saved_step)
            raise
        except BaseException as e:
            where = "disk full at step" if _disk_full(e) else "at step"
            summary.update(status="failed", reason=f"{type(e).__name__} {where} {self.step}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}", step=self.step)
            raise

    def cadence(self, step: int, stopping: bool) -> None:
        """Logging, evaluation and checkpoints after `step`."""
        config = self.config
        last = step == config.num_train_steps
        if stopping or last or step % config.log_every_steps == 0:
            self.flush_train(step)
            self.summary["step"] = step
            self.write_summary()
        if last:
            self.finish(step)
        elif step % config.eval_every_steps == 0:
            self.evaluate(step, self.eval_sets)
        if stopping or last or step % config.checkpoint_every_steps == 0:
            self.flush_train(step)  # never checkpoint a non-finite state
            self.checkpointer.save(step, unreplicate(self.state), self.train_data.state(step))
            self.saved_step = step
            self.summary.update(step=step, checkpoint_step=step)
            self.write_summary()

    def flush_train(self, step: int) -> None:
        """Log the mean of pending train metrics; raise NonFiniteLoss at the first bad step."""
        if not self.pending:
            return
        host = jax.device_get([unreplicate(m) for m in self.pending])
        for i, m in enumerate(host):
            loss = float(m["loss"][0] / max(float(m["loss"][1]), 1e-12))
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({loss}) at step {step - len(host) + i + 1}")
        sums = jax.tree.map(lambda *xs: np.sum(xs), *host)
        scalars = {f"train/{k}": v for k, v in finalize(sums).items()}
        scalars["train/learning_rate"] = float(host[-1]["learning_rate"][0])
        now, timing = time.time(), self.timing
        if timing["t"] is not None:  # the first interval holds compilation: not a rate
            dt, ds = now - timing["t"], step - timing["step"]
            timing["measured_steps"] += ds
            timing["measured_time"] += dt
            scalars["steps_per_second"] = ds / dt
        timing["t"], timing["step"] = now, step
        self.pending.clear()
        self.log(step, scalars)
        self.bar.set_postfix(loss=f"{scalars['train/loss']:.3f}",
                             acc=f"{scalars.get('train/accuracy', float('nan')):.3f}")

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        self.writer.write(step, {**scalars, "wall_time_s": self.wall()})
        self.summary["final_metrics"].update(scalars)

    def scored_sets(self, split: str, num_batches: int) -> dict[tuple[str, ...], tuple]:
        """{prefixes: (pmapped eval step, device batches)} for `split` at every length."""
        out, config = {}, self.config
        for prefixes, t in self.scored.items():
            source = DataSource(t, split, config.batch_size, config.seed)
            out[tuple(p.replace("eval", split, 1) for p in prefixes)] = (
                compiled_eval(self.model, t, self.devices),
                [shard(source.host_batch(i), self.devices) for i in range(num_batches)])
        return out

    def evaluate(self, step: int, sets: dict[tuple[str, ...], tuple]) -> None:
        scalars = {}
        for prefixes, (p_eval, batches) in sets.items():
            totals = None
            for b in batches:
                m = jax.device_get(unreplicate(p_eval(self.state.params, b)))
                totals = m if totals is None else jax.tree.map(np.add, totals, m)
            scalars.update({f"{prefix}/{k}": v for prefix in prefixes
                            for k, v in finalize(totals).items()})
        if scalars:
            self.log(step, scalars)

    def finish(self, step: int) -> None:
        """The last evaluation, then the test set (scored once, never used for selection).
        Either is skipped when a resumed run's metrics.jsonl already holds it at this step."""
        if "eval/loss" not in self.final_at_start:
            self.evaluate(step, self.eval_sets)
        tested = any(k.startswith("test/") for k in self.final_at_start)
        if self.config.num_test_batches and not tested:
            self.evaluate(step, self.scored_sets("test", self.config.num_test_batches))

    def _close(self) -> None:
        """Every cleanup step guarded, so that summary.json is always written if it can be."""
        problems = []
        for what, close in (("the data pipeline", lambda: self.batches.close()),
                            ("the progress bar", lambda: self.bar.close()),
                            ("the metric writers", lambda: self.writer.close()),
                            ("the checkpointer", lambda: self.checkpointer.close())):
            try:
                close()
            except AttributeError:  # never opened (start-up failed before it)
                pass
            except Exception as e:
                problems.append((what, e))
        summary = self.summary
        for what, e in problems:
            if summary["status"] in ("running", "done", "preempted"):
                full = "disk full" if _disk_full(e) else f"{type(e).__name__}"
                summary.update(status="failed", reason=f"{full} while closing {what} at step "
                               f"{self.step}: {e}")
        measured = self.timing["measured_time"]
        rate = self.timing["measured_steps"] / measured if measured else None
        if summary.get("peak_memory_kind") == "device":  # the allocator's peak, evals included
            summary["peak_memory_bytes"] = memory_info(self.devices)["peak_memory_bytes"]
        summary.update(
            wall_time_s=self.wall() if hasattr(self, "t_start") else self.wall_offset,
            steps_per_second=rate,
            tokens_per_second=rate * self.config.batch_size * self.task.max_length
            if rate else None,
        )
        if summary["status"] == "running":  # an exception is on its way up
            summary.update(status="failed", reason=summary.get("reason") or "crashed")
        try:
            self.write_summary()
        except OSError as e:  # e.g. the disk is full: the shortest summary may still fit
            summary = {"status": "failed", "step": self.step,
                       "reason": f"{'disk full' if _disk_full(e) else type(e).__name__} "
                                 f"writing summary.json at step {self.step}"}
            with contextlib.suppress(OSError):
                self.run_dir.write_summary(summary)
            raise
