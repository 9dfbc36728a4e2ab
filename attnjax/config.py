"""Configs: the framework's defaults, loading config files, overrides and validation.

A config file (`configs/<name>.py`) defines `get_config()` (optionally `get_config(arg)`) that
starts from `defaults()` and changes what its task/model family needs. Overrides come as dotted
keys, from the command line (`--config.model.attention=local`, parsed by absl `config_flags`) or
from an experiment's `sweep()`. `resolve()` then checks every key against `defaults()`, the task's
settings and the attention variant's settings, fills their defaults, and locks the config: an
unknown key, variant or task is a `ConfigError` that names the valid choices.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from attnjax import REPO_ROOT, attention, tasks, trackers
from attnjax.models import positional
from attnjax.registry import ConfigError

POSITIONALS = positional.KINDS  # sinusoidal, learned, rope, alibi, t5_bias, none
DTYPES = ("auto", "float32", "bfloat16")
# Subtrees whose keys belong to a plug-in (a task or an attention variant), checked there.
_PLUGIN_KEYS = ("task", "model.attention_kwargs", "model.cross_attention_kwargs")


def defaults() -> ml_collections.ConfigDict:
    """Every framework key with its default. Config files start from this."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # initialisation and dropout
    c.data_seed = -1  # the train data stream; -1 = seed (resolved so). Fix it to vary init only
    c.num_train_steps = 1000
    # synthetic tasks: 0 = a fresh example every time (an infinite stream); N > 0 = a fixed
    # pool of N train examples, read in per-epoch permutations (epochs = steps·batch_size / N),
    # as Zoology trains on 100k. Eval / test sets are drawn apart from it (tasks/_epochs.py)
    c.train_examples = 0
    c.batch_size = 64  # global: split evenly over the local devices
    c.learning_rate = 1e-3  # peak, after linear warmup; cosine decay to 0 by num_train_steps
    c.warmup_steps = 100
    # split each device's batch into this many micro-batches, run one after another with their
    # gradients summed: the same update (to float rounding) with 1/M of the activation memory
    c.grad_accum_steps = 1
    c.weight_decay = 0.1  # decoupled (AdamW); matrices only, not biases/norms
    c.grad_clip_norm = 1.0  # global-norm clipping; 0 disables
    c.adam_b1 = 0.9
    c.adam_b2 = 0.98
    c.adam_eps = 1e-8
    c.eval_every_steps = 200
    c.num_eval_batches = 4  # fixed validation set ("eval" split): num_eval_batches x batch_size
    c.num_test_batches = 4  # fixed test set, scored once at the end ("test/*"); 0 = none
    # length generalisation: also evaluate at these values of the task's length setting
    # (e.g. seq_len); metrics eval_len{L}/* at every evaluation and test_len{L}/* at the end
    c.eval_lengths = ()
    c.prefetch_batches = 2  # train batches made ahead in a background thread
    c.data_workers = 0  # > 0: processes that make train batches (slow generators); same data
    # generate the run's batches once into an on-disk cache (ATTNJAX_DATA_CACHE, default
    # ~/.cache/attnjax/data) and memory-map them; runs with the same data share it. For slow
    # generators (hard Pathfinder); bit-identical batches either way
    c.data_cache = False
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.num_devices = 0  # 0 = every local device
    c.progress_bar = True
    # a worker's claim on its run dir is stale (taken over, resumed) after this long without a
    # heartbeat (a dead machine); a dead process on the same host frees it at once
    c.claim_timeout_s = 300.0
    # after SIGTERM, seconds to reach a step boundary (checkpoint) before recording preempted
    # and exiting anyway (a step that never returns); a second SIGTERM/Ctrl-C exits at once
    c.preempt_grace_s = 60.0

    # where the numbers go besides metrics.jsonl (attnjax/trackers.py); operational: a resume
    # may change any of these
    c.logging = ml_collections.ConfigDict()
    c.logging.trackers = ("jsonl", "tensorboard")  # of trackers.KINDS; "jsonl" is always on
    c.logging.wandb_project = "attnjax"
    c.logging.wandb_entity = ""  # "" = W&B's default entity
    c.logging.wandb_group = ""  # "" = the sweep dir's name (none for a lone run)
    c.logging.wandb_mode = ""  # online | offline | disabled; "" = $WANDB_MODE, else online

    c.model = ml_collections.ConfigDict()
    c.model.attention = "softmax"  # a file name in attnjax/attention/
    c.model.attention_kwargs = ml_collections.ConfigDict()  # that variant's settings
    c.model.num_layers = 2
    c.model.d_model = 64
    c.model.num_heads = 2
    c.model.num_kv_heads = 0  # 0 = num_heads (MHA); 1 = MQA; a divisor of num_heads = GQA
    c.model.mlp_dim = 256  # 0 = no MLP sublayer (a Block is its token mixing alone, as Zoology)
    c.model.dropout_rate = 0.0  # residual and embedding dropout
    c.model.attention_dropout_rate = 0.0  # on attention weights (variants with logits)
    c.model.qk_norm = False  # LayerNorm of q and k per head before the variant
    c.model.logit_soft_cap = 0.0  # > 0: logits -> cap * tanh(logits / cap)
    # > 0: a depthwise convolution of this width over the sequence on q, k, v after their
    # projections (on x for mixer-level variants), as Based, Mamba-2 and Hyena use; causal on
    # causal tasks, centred on bidirectional ones; self mixing only. 0 = off
    c.model.short_conv = 0
    c.model.positional = "learned"  # one of POSITIONALS
    c.model.cross_attention = "softmax"  # encoder-decoder (seq2seq tasks) cross attention
    c.model.cross_attention_kwargs = ml_collections.ConfigDict()
    # compute dtype: "auto" = bfloat16 on GPU/TPU, float32 on CPU (resolved at run time, the
    # dtype used is in summary.json); params, optimizer state, softmax, losses stay float32
    c.model.dtype = "auto"
    c.model.remat = False  # recompute each Block's activations in the backward pass (memory)
    # one Block compiled and scanned over the layers (params stacked on a leading layer axis):
    # compile time does not grow with depth; checkpoints differ from the unscanned model's
    c.model.scan_layers = False

    c.task = ml_collections.ConfigDict()
    c.task.name = "mqar"  # a file name in attnjax/tasks/; other keys are its settings
    return c


# ---------------------------------------------------------------------------- loading files


def _load_module(path: Path, kind: str):
    """Imports a config or experiment file; any error in it is one ConfigError line."""
    if not path.is_file():
        raise ConfigError(f"{kind} file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_attnjax_{kind}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"{kind} file {path} does not load: {describe_error(e, path)}") from None
    return module


def describe_error(e: BaseException, path: Path | str) -> str:
    """'SyntaxError: invalid syntax (line 3)': the error and the line of `path` it points at."""
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
    if line is None:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if Path(f.filename).resolve() == Path(path).resolve()]
        line = frames[-1].lineno if frames else None
    message = (e.msg if isinstance(e, SyntaxError) else str(e)) or ""
    return f"{type(e).__name__}: {message}" + (f" (line {line})" if line else "")


def config_path(name_or_path: str) -> Path:
    """'mqar' -> <repo>/configs/mqar.py; a path is returned as is (must exist)."""
    p = Path(name_or_path)
    if p.suffix == ".py" or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    candidate = REPO_ROOT / "configs" / f"{name_or_path}.py"
    if not candidate.is_file():
        known = sorted(f.stem for f in (REPO_ROOT / "configs").glob("[!_]*.py"))
        close = difflib.get_close_matches(name_or_path, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ConfigError(f"unknown config {name_or_path!r}{hint} Known: {', '.join(known)}")
    return candidate


def load_config_file(name_or_path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """Calls `get_config()` (or `get_config(arg)`) of a config file or a configs/ name."""
    module = _load_module(config_path(name_or_path), "config")
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{name_or_path} defines no get_config()")
    try:
        return module.get_config(arg) if arg is not None else module.get_config()
    except ConfigError:
        raise
    except Exception as e:
        where = config_path(name_or_path)
        raise ConfigError(f"{where}: get_config() raised {describe_error(e, where)}") from None


# ---------------------------------------------------------------------------- overrides


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'attention': 'x'}} -> {'model.attention': 'x'}."""
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping | ml_collections.ConfigDict) and len(value):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
    return out


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted-key overrides set (unknown keys are caught by resolve)."""
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked deep copy
    for key, value in flatten(overrides).items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                node[p] = ml_collections.ConfigDict()
            node = node[p]
            if not isinstance(node, ml_collections.ConfigDict):
                raise ConfigError(f"override {key!r}: {p!r} is a value, not a group of keys")
        try:
            node[leaf] = value
        except TypeError as e:  # ConfigDict's type safety: int field given a string, etc.
            raise ConfigError(f"override {key}={value!r}: {e}") from None
    return config


# ---------------------------------------------------------------------------- validation


def _paths(c: ml_collections.ConfigDict, prefix: str = "") -> Iterator[str]:
    for key, value in c.items():
        path = f"{prefix}{key}"
        if any(path == p or path.startswith(p + ".") for p in _PLUGIN_KEYS):
            continue
        if isinstance(value, ml_collections.ConfigDict):
            yield from _paths(value, path + ".")
        else:
            yield path


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        from attnjax.registry import unknown_name_message

        raise ConfigError(unknown_name_message(what, value, list(choices)))


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validated, completed and locked copy of `config` (ConfigError on any unknown key/name)."""
    base = defaults()
    known = set(_paths(base))
    for path in _paths(config):
        if path not in known:
            close = difflib.get_close_matches(path, sorted(known), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config key {path!r}{hint} Known keys: {', '.join(sorted(known))} "
                "(plus task.<setting> and model.attention_kwargs.<setting> of the chosen "
                "task and variant)"
            )
    merged = apply_overrides(base, flatten(config.to_dict()))

    task = merged.task.to_dict()
    task_name = task.pop("name")
    task_settings = {**tasks.options(task_name), **task}  # options() raises on unknown names
    task_obj = tasks.create(task_name, **task)  # validates keys and values (__post_init__)
    merged.task = ml_collections.ConfigDict({"name": task_name, **task_settings})
    merged.eval_lengths = _check_eval_lengths(merged.eval_lengths, task_obj, task_name)
    if merged.data_seed < 0:
        merged.data_seed = merged.seed

    model = merged.model
    for key in ("attention", "cross_attention"):
        model[f"{key}_kwargs"] = ml_collections.ConfigDict(
            attention.check_options(model[key], model[f"{key}_kwargs"].to_dict())
        )
    _check_choice("positional encoding", model.positional, POSITIONALS)
    _check_model(model, tasks.get(task_name))
    _check_choice("model dtype", merged.model.dtype, DTYPES)
    for key in ("num_train_steps", "batch_size", "eval_every_steps", "log_every_steps",
                "checkpoint_every_steps", "num_eval_batches", "keep_checkpoints",
                "prefetch_batches", "claim_timeout_s", "preempt_grace_s"):
        if merged[key] <= 0:
            raise ConfigError(f"{key} must be positive, got {merged[key]}")
    if merged.data_cache and tasks.get(task_name).needs_data:
        raise ConfigError(f"data_cache: task {task_name!r} reads local files, already memory-"
                          "mapped; the cache is for generated data (e.g. pathfinder)")
    if merged.train_examples < 0:
        raise ConfigError(f"train_examples must be >= 0 (0 = an infinite stream), got "
                          f"{merged.train_examples}")
    if merged.train_examples and tasks.get(task_name).needs_data:
        raise ConfigError(f"train_examples: task {task_name!r} reads its examples from files "
                          "(a finite set already); the pool is for synthetic tasks")
    if merged.data_workers < 0:
        raise ConfigError(f"data_workers must be >= 0, got {merged.data_workers}")
    merged.logging.trackers = trackers.check(merged.logging.trackers)
    if merged.logging.wandb_mode:
        _check_choice("logging.wandb_mode", merged.logging.wandb_mode, trackers.WANDB_MODES)
    if merged.num_test_batches < 0:
        raise ConfigError(f"num_test_batches must be >= 0, got {merged.num_test_batches}")
    merged.lock()
    return merged


def _check_eval_lengths(lengths, task, task_name: str) -> tuple[int, ...]:
    """Sorted distinct eval lengths; each must make a valid task (ConfigError otherwise)."""
    if isinstance(lengths, (int, str)):
        lengths = (lengths,)
    try:
        values = tuple(sorted({int(v) for v in lengths}))
    except (TypeError, ValueError):
        raise ConfigError(f"eval_lengths must be integers, got {lengths!r}") from None
    if values and task.length_field is None:
        raise ConfigError(f"eval_lengths: task {task_name!r} has no length setting to vary")
    for value in values:
        if value <= 0:
            raise ConfigError(f"eval_lengths must be positive, got {value}")
        try:
            task.with_length(value)
        except ConfigError as e:
            raise ConfigError(f"eval_lengths: {task.length_field}={value} is not valid for task "
                              f"{task_name!r}: {e}") from None
    return values


def _check_model(model, task_cls) -> None:
    """Combinations of Block options, variant capabilities and the task's mode."""
    caps = attention.get(model.attention).capabilities
    name = model.attention
    if model.d_model % model.num_heads:
        raise ConfigError(
            f"model.d_model={model.d_model} must be divisible by model.num_heads={model.num_heads}"
        )
    if model.num_kv_heads and model.num_heads % model.num_kv_heads:
        raise ConfigError(f"model.num_kv_heads={model.num_kv_heads} must divide "
                          f"model.num_heads={model.num_heads} (0 = one per head)")
    if task_cls.causal and not caps.causal:
        raise ConfigError(f"task {task_cls.__name__} runs causally but attention {name!r} has "
                          "no causal mode")
    if not task_cls.causal and not caps.bidirectional:
        raise ConfigError(f"task {task_cls.__name__} is bidirectional but attention {name!r} "
                          "is causal only")
    needs_logits = [what for what, on in (
        (f"model.positional={model.positional!r}", model.positional in ("alibi", "t5_bias")),
        ("model.logit_soft_cap", model.logit_soft_cap > 0),
        ("model.attention_dropout_rate", model.attention_dropout_rate > 0),
    ) if on]
    if needs_logits and not caps.logits:
        with_logits = [n for n in attention.names() if attention.get(n).capabilities.logits]
        raise ConfigError(f"{needs_logits[0]} needs a variant with explicit logits; "
                          f"{name!r} has none. Variants with logits: {', '.join(with_logits)}")
    if caps.level == "mixer" and (model.positional in ("rope", "alibi", "t5_bias")
                                  or model.qk_norm or model.num_kv_heads):
        raise ConfigError(f"{name!r} is a mixer-level baseline (no q/k/v): rope, alibi, "
                          "t5_bias, qk_norm and num_kv_heads do not apply")
    if model.mlp_dim < 0:
        raise ConfigError(f"model.mlp_dim must be >= 0 (0 = no MLP), got {model.mlp_dim}")
    if model.short_conv < 0:
        raise ConfigError(f"model.short_conv must be >= 0 (0 = off), got {model.short_conv}")
    if model.positional == "rope" and (model.d_model // model.num_heads) % 2:
        raise ConfigError("model.positional='rope' needs an even head dimension")
    if task_cls.head == "seq2seq":
        cross = attention.get(model.cross_attention).capabilities
        if cross.level != "attention" or not cross.cross_attention:
            able = [n for n in attention.names()
                    if attention.get(n).capabilities.cross_attention
                    and attention.get(n).capabilities.level == "attention"]
            raise ConfigError(f"model.cross_attention={model.cross_attention!r} cannot attend "
                              f"to another sequence. Variants that can: {', '.join(able)}")


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def normalize_json(stored: dict) -> dict:
    """A stored config.json resolved by today's code (keys added since filled with their
    defaults), as JSON data; unchanged when it no longer resolves."""
    try:
        return json.loads(to_json(resolve(ml_collections.ConfigDict(stored))))
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError):
        return stored
