"""The single train loop: `train_and_evaluate(config, workdir)`. Tasks differ by data only.

`train_step(state, batch, hparams, rng)` is a pure function: the learning rate and weight decay
arrive as traced `hparams`, so a learning-rate sweep reuses one compiled program, and seeds or
hyper-parameters can later be `vmap`ped. Data parallelism is `jax.pmap` over the local devices:
the global batch is split across them and gradients are summed with `psum` of per-device
(loss sum / global weight), which is exactly the single-device gradient.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from attnjax import config as config_lib
from attnjax import models, rundir, tasks
from attnjax.checkpoint import Checkpointer
from attnjax.metric_writers import MetricWriter, truncate_after
from attnjax.parallel import AXIS, replicate, shard, unreplicate
from attnjax.registry import ConfigError
from attnjax.tasks.base import finalize


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    opt_state: Any


class NonFiniteLoss(RuntimeError):
    pass


# ---------------------------------------------------------------------------- pure steps


def lr_multiplier(step, *, num_train_steps: int, warmup_steps: int):
    """Linear warmup to 1 over `warmup_steps`, then cosine decay to 0 at `num_train_steps`."""
    step = jnp.asarray(step, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / max(warmup_steps, 1))
    progress = jnp.clip((step - warmup_steps) / max(num_train_steps - warmup_steps, 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup_steps, warm, cosine)


def make_optimizer(config) -> optax.GradientTransformation:
    """Clipping + Adam moments; the -lr·(update + wd·param) step is applied in train_step."""
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    parts.append(optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))
    return optax.chain(*parts)


def hparams_from(config) -> dict[str, jax.Array]:
    """The traced hyper-parameters of a run."""
    return {
        "learning_rate": jnp.float32(config.learning_rate),
        "weight_decay": jnp.float32(config.weight_decay),
    }


def _model_inputs(batch):
    """The batch entries the model takes besides `inputs` (see models.INPUT_KEYS)."""
    return {k: batch[k] for k in models.INPUT_KEYS if k in batch}


def _global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def train_step(state, batch, hparams, rng, *, model, task, tx, schedule, axis_name=AXIS):
    """One AdamW step on a per-device shard; metrics are summed over devices."""
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(axis_name))

    def loss_fn(params):
        logits = model.apply(
            {"params": params}, batch["inputs"], **_model_inputs(batch),
            deterministic=False, rngs={"dropout": rng},
        )
        loss_sum, weight, metrics = task.loss_and_metrics(logits, batch)
        return loss_sum / jax.lax.psum(weight, axis_name), metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.psum(grads, axis_name)
    metrics = jax.lax.psum(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = hparams["learning_rate"] * schedule(state.step)
    wd = hparams["weight_decay"]
    # decoupled weight decay on matrices only (not biases, norm scales)
    updates = jax.tree.map(
        lambda u, p: -lr * (u + wd * p) if p.ndim >= 2 else -lr * u, updates, state.params
    )
    params = optax.apply_updates(state.params, updates)
    one = jnp.float32(1.0)
    metrics = {**metrics, "learning_rate": (lr, one), "grad_norm": (_global_norm(grads), one)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, model, task, axis_name=AXIS):
    logits = model.apply({"params": params}, batch["inputs"], **_model_inputs(batch))
    _, _, metrics = task.loss_and_metrics(logits, batch)
    return jax.lax.psum(metrics, axis_name)


@functools.lru_cache(maxsize=32)
def _compiled(model, task, opt_settings: tuple, num_train_steps: int, warmup_steps: int, devices):
    """pmapped steps, cached on everything static so same-shaped runs (seeds, lrs) share them."""
    tx = make_optimizer(ml_collections.ConfigDict(dict(opt_settings)))
    schedule = functools.partial(
        lr_multiplier, num_train_steps=num_train_steps, warmup_steps=warmup_steps
    )
    p_train = jax.pmap(
        functools.partial(train_step, model=model, task=task, tx=tx, schedule=schedule),
        axis_name=AXIS, in_axes=(0, 0, None, None), devices=devices, donate_argnums=(0,),
    )
    p_eval = jax.pmap(
        functools.partial(eval_step, model=model, task=task), axis_name=AXIS, devices=devices
    )
    return tx, p_train, p_eval


# ---------------------------------------------------------------------------- helpers


def host_batch(task, split: str, index: int, config) -> dict[str, np.ndarray]:
    """This process's slice of global batch `index` (all processes generate the same batch)."""
    batch = task.batch(split, index, config.batch_size, config.seed)
    n, i = jax.process_count(), jax.process_index()
    per = config.batch_size // n
    return {k: v[i * per:(i + 1) * per] for k, v in batch.items()}


def _devices(config) -> tuple:
    devices = jax.local_devices()
    if config.num_devices:
        if config.num_devices > len(devices):
            raise ConfigError(f"num_devices={config.num_devices} but only {len(devices)} local")
        devices = devices[: config.num_devices]
    global_devices = len(devices) * jax.process_count()
    if config.batch_size % global_devices:
        raise ConfigError(
            f"batch_size={config.batch_size} must be divisible by the {global_devices} devices"
        )
    return tuple(devices)


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


@contextlib.contextmanager
def _stop_signals_set(flag: threading.Event):
    """While inside, SIGTERM (a scheduler's preemption) and a first Ctrl-C set `flag`, so the
    loop stops at a step boundary with a checkpoint; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGTERM, lambda *_: flag.set()), (signal.SIGINT, on_interrupt))}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------- the loop


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    step_callback: Callable[[int], bool] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run in `workdir`; resume it if it holds a checkpoint.

    `step_callback(step)` is called after every step; returning True stops the run as
    preempted (checkpoint saved), which is how schedulers and tests interrupt a run.
    Returns the final summary (also written to <workdir>/summary.json).
    """
    config = config_lib.resolve(config)
    workdir = Path(workdir)
    task = tasks.create(config.task.name, **{k: v for k, v in config.task.items() if k != "name"})
    model = models.build(config.model, task)
    devices = _devices(config)
    is_main = jax.process_index() == 0

    previous_config = rundir.read_json(workdir / "config.json")
    config_json = config_lib.to_json(config)
    if previous_config is not None and previous_config != json.loads(config_json):
        raise ConfigError(
            f"{workdir} holds a run with a different config; choose another --workdir "
            "(or delete it to start over)"
        )
    summary = rundir.read_json(workdir / "summary.json") or {}
    if summary.get("status") == "done":
        return summary
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        rundir.atomic_write_text(workdir / "config.json", config_json + "\n")

    opt_settings = tuple(sorted(
        (k, config[k]) for k in ("grad_clip_norm", "adam_b1", "adam_b2", "adam_eps")
    ))
    tx, p_train, p_eval = _compiled(
        model, task, opt_settings, config.num_train_steps, config.warmup_steps, devices
    )
    init_batch = host_batch(task, "train", 0, config)
    params = model.init(jax.random.PRNGKey(config.seed), init_batch["inputs"],
                        **_model_inputs(init_batch))["params"]
    state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params))

    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
    start_step = checkpointer.latest_step() or 0
    if start_step:
        state = checkpointer.restore(start_step, state)
    wall_offset = truncate_after(workdir, start_step) if is_main else 0.0

    summary = {
        "status": "running", "reason": None, "step": start_step,
        "num_train_steps": config.num_train_steps, "num_params": count_params(params),
        "attention": config.model.attention, "task": config.task.name,
        "started_at": summary.get("started_at") or rundir.now(),
        "versions": rundir.versions(), "device": rundir.device_info(len(devices)),
        "git_revision": rundir.git_revision(), "final_metrics": {},
    }
    write_summary = lambda: is_main and rundir.atomic_write_json(
        workdir / "summary.json", {**summary, "updated_at": rundir.now()}
    )
    write_summary()

    writer = MetricWriter(workdir, enabled=is_main)
    eval_batches = [shard(host_batch(task, "eval", i, config), devices)
                    for i in range(config.num_eval_batches)]
    hparams, base_rng = hparams_from(config), jax.random.PRNGKey(config.seed)
    tokens_per_step = config.batch_size * task.max_length
    t_start = time.time()
    timing = {"t": None, "step": start_step, "measured_steps": 0, "measured_time": 0.0}
    pending: list[Any] = []
    preempt = threading.Event()
    bar = tqdm(total=config.num_train_steps, initial=start_step, disable=not (
        is_main and config.progress_bar), desc=workdir.name, unit="step", dynamic_ncols=True,
        leave=True)

    def wall() -> float:
        return wall_offset + time.time() - t_start

    def flush_train(step: int) -> None:
        """Log the mean of pending train metrics; raise NonFiniteLoss at the first bad step."""
        if not pending:
            return
        host = jax.device_get([unreplicate(m) for m in pending])
        for i, m in enumerate(host):
            loss = float(m["loss"][0] / max(float(m["loss"][1]), 1e-12))
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"non-finite loss ({loss}) at step {step - len(host) + i + 1}")
        sums = jax.tree.map(lambda *xs: np.sum(xs), *host)
        scalars = {f"train/{k}": v for k, v in finalize(sums).items()}
        scalars["train/learning_rate"] = float(host[-1]["learning_rate"][0])
        now = time.time()
        if timing["t"] is not None:  # the first interval holds compilation: not a rate
            dt, ds = now - timing["t"], step - timing["step"]
            timing["measured_steps"] += ds
            timing["measured_time"] += dt
            scalars["steps_per_second"] = ds / dt
        timing["t"], timing["step"] = now, step
        pending.clear()
        writer.write(step, {**scalars, "wall_time_s": wall()})
        summary["final_metrics"].update(scalars)
        bar.set_postfix(loss=f"{scalars['train/loss']:.3f}",
                        acc=f"{scalars.get('train/accuracy', float('nan')):.3f}")

    def evaluate(step: int) -> None:
        totals = None
        for b in eval_batches:
            m = jax.device_get(unreplicate(p_eval(state.params, b)))
            totals = m if totals is None else jax.tree.map(np.add, totals, m)
        scalars = {f"eval/{k}": v for k, v in finalize(totals).items()}
        writer.write(step, {**scalars, "wall_time_s": wall()})
        summary["final_metrics"].update(scalars)

    def save(step: int) -> None:
        checkpointer.save(step, unreplicate(state))

    step = start_step
    state = replicate(state, devices)
    try:
        with _stop_signals_set(preempt):
            while step < config.num_train_steps:
                batch = shard(host_batch(task, "train", step, config), devices)
                state, metrics = p_train(state, batch, hparams, base_rng)
                pending.append(metrics)
                step += 1
                bar.update(1)
                stop = preempt.is_set() or bool(step_callback and step_callback(step))
                last = step == config.num_train_steps
                if stop or last or step % config.log_every_steps == 0:
                    flush_train(step)
                if last or step % config.eval_every_steps == 0:
                    evaluate(step)
                if stop or last or step % config.checkpoint_every_steps == 0:
                    flush_train(step)  # never checkpoint a non-finite state
                    save(step)
                summary["step"] = step
                if stop:
                    summary.update(status="preempted", reason=f"stopped at step {step}")
                    break
            else:
                if "eval/loss" not in summary["final_metrics"]:  # resumed at the last step
                    evaluate(step)
                summary["status"] = "done"
    except NonFiniteLoss as e:
        summary.update(status="failed", reason=str(e), step=step)
    except KeyboardInterrupt:
        summary.update(status="preempted", reason=f"interrupted at step {step}", step=step)
        raise
    except BaseException as e:
        summary.update(status="failed", reason=f"{type(e).__name__}: {e}", step=step)
        raise
    finally:
        bar.close()
        writer.close()
        checkpointer.close()
        measured = timing["measured_time"]
        rate = timing["measured_steps"] / measured if measured else None
        summary.update(
            wall_time_s=wall(), steps_per_second=rate,
            tokens_per_second=rate * tokens_per_step if rate else None,
        )
        write_summary()
    return summary
