"""Pure step functions: the train state, its initialisation, the optimizer, the train and eval
steps, compiled and cached. No I/O, no clock: the loop (attnjax/train.py) owns time.

`train_step(state, batch, hparams, rng)` takes every hyper-parameter a sweep varies as traced
`hparams` (TRACED: learning rate, weight decay, warmup; seeds arrive as the rng and the data),
so runs that differ only in those share one compiled program. A *pack* of K such runs is that
step under `vmap` over a leading replica axis: K runs for about the price of one on an
accelerator, each replica with its own initialisation, data stream, dropout rng and schedule,
and numbers equal to the same run trained alone. A replica whose loss goes non-finite keeps its
previous state (masked) and the others go on untouched.
Data parallelism is `jax.pmap` over the devices (of every process in a multi-process run: see
pmap_devices), the replica axis `vmap`ped inside the per-device step: the global batch is split
across devices and gradients are summed with `psum` of per-device (loss sum / global weight),
which is exactly the single-device gradient. (vmap inside pmap rather than a 2-D mesh: the
replica axis needs no collective and no sharding, so each device keeps whole replicas and the
existing data-parallel step is reused unchanged.)
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from attnjax import models, tasks
from attnjax.parallel import AXIS
from attnjax.registry import ConfigError


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    opt_state: Any


# Config keys a pack's runs may differ in (traced values, or the data they see); everything else
# must be equal for runs to share a compiled program. Declared once: sweeps group by it.
TRACED = ("seed", "data_seed", "learning_rate", "weight_decay", "warmup_steps")


def lr_multiplier(step, *, num_train_steps: int, warmup_steps):
    """Linear warmup to 1 over `warmup_steps` (traced or static), then cosine decay to 0 at
    `num_train_steps`."""
    step = jnp.asarray(step, jnp.float32)
    warmup_steps = jnp.asarray(warmup_steps, jnp.float32)
    warm = jnp.minimum(1.0, (step + 1.0) / jnp.maximum(warmup_steps, 1.0))
    span = jnp.maximum(num_train_steps - warmup_steps, 1.0)
    progress = jnp.clip((step - warmup_steps) / span, 0.0, 1.0)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup_steps, warm, cosine)


def make_optimizer(config) -> optax.GradientTransformation:
    """Clipping + Adam moments; the -lr·(update + wd·param) step is applied in train_step."""
    parts = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 else []
    parts.append(optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps))
    return optax.chain(*parts)


def hparams_from(config) -> dict[str, np.ndarray]:
    """The traced hyper-parameters of a run (host values)."""
    return {
        "learning_rate": np.float32(config.learning_rate),
        "weight_decay": np.float32(config.weight_decay),
        "warmup_steps": np.float32(config.warmup_steps),
    }


def pack_hparams(configs) -> dict[str, np.ndarray]:
    """[K] arrays of each traced hyper-parameter of a pack's runs."""
    each = [hparams_from(c) for c in configs]
    return {k: np.stack([h[k] for h in each]) for k in each[0]}


def pack_rngs(configs) -> jax.Array:
    """[K] dropout keys, one per run (from its seed, as a lone run has it)."""
    return jnp.stack([jax.random.PRNGKey(c.seed) for c in configs])


def static_signature(config_dict: dict) -> str:
    """The config with TRACED (and operational) keys removed, as JSON: runs with the same
    signature can be one pack."""
    import json

    from attnjax.rundir import OPERATIONAL_KEYS

    drop = set(TRACED) | set(OPERATIONAL_KEYS)
    return json.dumps({k: v for k, v in config_dict.items() if k not in drop}, sort_keys=True)


def model_inputs(batch):
    """The batch entries the model takes besides `inputs` (see models.INPUT_KEYS)."""
    return {k: batch[k] for k in models.INPUT_KEYS if k in batch}


def _global_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def train_step(state, batch, hparams, rng, *, model, task, tx, schedule, accum_steps=1,
               axis_name=AXIS):
    """One AdamW step of one run on a per-device shard; metrics are summed over devices. A
    non-finite loss or gradient leaves the state as it was (the loop fails the run there).
    accum_steps > 1 splits the shard into that many micro-batches run one after another in a
    `scan` (gradients summed, then divided by the whole batch's weight): the same update as one
    pass over the shard up to float rounding, with 1/accum_steps of its activation memory."""
    rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(axis_name))

    def loss_fn(params, batch, rng, normalise=True):
        """The batch's loss over the global weight (psum), or its plain sum for a micro-batch
        (the caller divides the summed gradients once)."""
        logits = model.apply(
            {"params": params}, batch["inputs"], **model_inputs(batch),
            deterministic=False, rngs={"dropout": rng},
        )
        loss_sum, weight, metrics = task.loss_and_metrics(logits, batch)
        scale = jax.lax.psum(weight, axis_name) if normalise else 1.0
        return loss_sum / scale, (weight, metrics)

    grad_fn = jax.grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        grads, (_, metrics) = grad_fn(state.params, batch, rng)
        grads = jax.lax.psum(grads, axis_name)
    else:
        grads, weight, metrics = _accumulate(grad_fn, state.params, batch, rng, accum_steps)
        total = jax.lax.psum(weight, axis_name)
        grads = jax.tree.map(lambda g: g / total, jax.lax.psum(grads, axis_name))
    metrics = jax.lax.psum(metrics, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    lr = hparams["learning_rate"] * schedule(state.step, warmup_steps=hparams["warmup_steps"])
    wd = hparams["weight_decay"]
    # decoupled weight decay on matrices only (not biases, norm scales)
    updates = jax.tree.map(
        lambda u, p: -lr * (u + wd * p) if p.ndim >= 2 else -lr * u, updates, state.params
    )
    params = optax.apply_updates(state.params, updates)
    one = jnp.float32(1.0)
    grad_norm = _global_norm(grads)
    metrics = {**metrics, "learning_rate": (lr, one), "grad_norm": (grad_norm, one)}
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    loss = metrics["loss"][0] / jnp.maximum(metrics["loss"][1], 1e-12)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda n, o: jnp.where(finite, n, o)  # a failed replica stops updating
    return jax.tree.map(keep, new, state), metrics


def _accumulate(grad_fn, params, batch, rng, accum_steps: int):
    """(gradient of the summed loss, weight, metrics) over the shard's micro-batches in a scan:
    only one micro-batch's activations are live at a time."""
    # every batch leaf [b, ...] -> [accum_steps, b / accum_steps, ...]
    micro = jax.tree.map(lambda x: x.reshape(accum_steps, -1, *x.shape[1:]), batch)

    def grads_of(m, i):
        grads, (weight, metrics) = grad_fn(params, m, jax.random.fold_in(rng, i), False)
        return grads, weight, metrics

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(grads_of, first, jnp.int32(0)))

    def body(carry, xs):
        return jax.tree.map(jnp.add, carry, grads_of(*xs)), None

    total, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(accum_steps)))
    return total


def eval_step(params, batch, *, model, task, axis_name=AXIS):
    logits = model.apply({"params": params}, batch["inputs"], **model_inputs(batch))
    _, _, metrics = task.loss_and_metrics(logits, batch)
    return jax.lax.psum(metrics, axis_name)


@functools.lru_cache(maxsize=32)
def compiled_train(model, task, opt_settings: tuple, num_train_steps: int, devices,
                   accum_steps: int = 1):
    """The pack train step, cached on everything static, so runs and packs of any size that
    differ only in traced values share it (jit compiles once per pack size K).

    p_train(state [D, K, ...], batch [D, B/D, K, ...], hparams {k: [K]}, rngs [K]) ->
    (state, metrics {name: ([D, K], [D, K])}); D = devices (pmap), K = replicas (vmap).
    """
    tx = make_optimizer(ml_collections.ConfigDict(dict(opt_settings)))
    schedule = functools.partial(lr_multiplier, num_train_steps=num_train_steps)
    one_run = functools.partial(train_step, model=model, task=task, tx=tx, schedule=schedule,
                                accum_steps=accum_steps)
    pack = jax.vmap(one_run, in_axes=(0, 1, 0, 0))
    p_train = jax.pmap(pack, axis_name=AXIS, in_axes=(0, 0, None, None),
                       devices=pmap_devices(devices), donate_argnums=(0,))
    return tx, p_train


@functools.lru_cache(maxsize=32)
def compiled_eval(model, task, devices):
    """The pack eval step of `task` (one per evaluation length): params [D, K, ...] and one
    shared batch [D, B/D, ...] -> metrics [D, K] (every run is scored on the same examples)."""
    pack = jax.vmap(functools.partial(eval_step, model=model, task=task), in_axes=(0, None))
    return jax.pmap(pack, axis_name=AXIS, devices=pmap_devices(devices))


def eval_tasks(task, config) -> dict[tuple[str, ...], Any]:
    """{metric prefixes: task} scored at every evaluation: ("eval",) at the training length
    and, with config.eval_lengths, "eval_len{L}" for each of them (the task rebuilt at length
    L). The training length is scored once and logged under both "eval" and "eval_len{L}", so
    the per-length series is complete on its own."""
    if not config.eval_lengths:
        return {("eval",): task}
    train_length = getattr(task, task.length_field)
    out = {("eval", f"eval_len{train_length}"): task}
    for length in config.eval_lengths:
        if length != train_length:
            out[(f"eval_len{length}",)] = task.with_length(length)
    return out


def devices_for(config) -> tuple:
    """The local devices a run trains on; ConfigError when the batch does not divide."""
    devices = jax.local_devices()
    if config.num_devices:
        if config.num_devices > len(devices):
            raise ConfigError(f"num_devices={config.num_devices} but only {len(devices)} local")
        devices = devices[: config.num_devices]
    check_batch(config, len(devices) * jax.process_count())
    return tuple(devices)


def check_batch(config, num_devices: int) -> None:
    """ConfigError unless the global batch splits into num_devices x grad_accum_steps parts."""
    if config.grad_accum_steps < 1:
        raise ConfigError(f"grad_accum_steps={config.grad_accum_steps} must be >= 1")
    if config.batch_size % num_devices:
        raise ConfigError(
            f"batch_size={config.batch_size} must be divisible by the {num_devices} devices"
        )
    if (config.batch_size // num_devices) % config.grad_accum_steps:
        raise ConfigError(
            f"batch_size={config.batch_size} / {num_devices} devices = "
            f"{config.batch_size // num_devices} per device must be divisible by "
            f"grad_accum_steps={config.grad_accum_steps}"
        )


def pmap_devices(devices: tuple) -> tuple:
    """pmap's `devices=` for a run on `devices` (this process's, from devices_for): with several
    processes, the same local slots of every process, in process order. pmap wants that global
    list, identical on every process, and then reduces (psum) over all of it; given only the
    local devices each process would train on its own rows alone."""
    if jax.process_count() == 1:
        return tuple(devices)
    return tuple(d for p in range(jax.process_count())
                 for d in jax.local_devices(process_index=p)[: len(devices)])


def setup(config) -> tuple:
    """(task, {prefix: eval task}, model, devices, tx, pmapped train step) of a resolved config."""
    task = tasks.create(config.task.name, **{k: v for k, v in config.task.items() if k != "name"})
    scored = eval_tasks(task, config)
    # one model serves every evaluation length (learned positions etc. sized for the longest)
    model = models.build(config.model, max(scored.values(), key=lambda t: t.max_length))
    devices = devices_for(config)
    opt_settings = tuple(sorted(
        (k, config[k]) for k in ("grad_clip_norm", "adam_b1", "adam_b2", "adam_eps")
    ))
    tx, p_train = compiled_train(model, task, opt_settings, config.num_train_steps, devices,
                                 config.grad_accum_steps)
    return task, scored, model, devices, tx, p_train


@functools.lru_cache(maxsize=32)
def _init_fn(model, tx):
    def init(key, batch):
        params = model.init(key, batch["inputs"], **model_inputs(batch))["params"]
        return TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params))

    return jax.jit(init)


def init_state(config, model, tx, batch) -> TrainState:
    """The step-0 train state of one run (parameters from config.seed). Initialised from one
    example of `batch`: the parameters never depend on the batch size."""
    one = jax.tree.map(lambda x: x[:1], batch)
    return _init_fn(model, tx)(jax.random.PRNGKey(config.seed), one)


def stack(trees):
    """K pytrees -> one with a leading replica axis [K, ...] (host numpy)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def member(tree, i: int):
    """Replica i of a stacked pytree [K, ...]."""
    return jax.tree.map(lambda x: x[i], tree)


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
