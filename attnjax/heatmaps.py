"""Attention heatmaps from a run's checkpoint: `attnjax heatmap RUN_DIR [--out DIR]`.

Rebuilds the run's task and model from RUN_DIR/config.json, restores the latest checkpoint,
runs one eval (or test) example through the model and collects the attention weights every
variant with explicit weights records (`AttentionBase.attention_weights` sows them into the
"intermediates" collection). Writes one PNG per layer and attention kind (decoder or encoder
self attention, cross attention) with a grid of heads, plus `attention_weights.npz` holding the
raw weights ([heads, q_len, kv_len] per layer, keys named like the PNGs) and the token ids.

    render(run_dir, out_dir, example=0, split="eval")
        -> {"attention": variant, "images": [Path, ...], "skipped": None | reason,
            "weights": Path | None}

Variants without explicit weights (linear, performer, ..., and the mixer-level baselines gru,
lstm, identity, mlp_mixer) are skipped with a reason, never an error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from attnjax import attention, models, rundir, tasks
from attnjax import config as config_lib
from attnjax.registry import ConfigError
from attnjax.rundir import RunDir

MAX_LABELLED_LENGTH = 64  # token ids as tick labels up to this many positions
SPLITS = ("eval", "test")


# ---------------------------------------------------------------------------- the run


def load_config(run_dir: Path) -> ml_collections.ConfigDict:
    """The run's resolved config (ConfigError when config.json is missing or no longer valid)."""
    raw = RunDir(run_dir).read_config()
    if raw is None:
        raise ConfigError(f"{run_dir} holds no config.json; is it a run directory?")
    return config_lib.resolve(ml_collections.ConfigDict(raw))


def _variants_with_weights(config) -> list[str]:
    """The variants of this model that record explicit weights (self and, for seq2seq, cross)."""
    used = [config.model.attention]
    if tasks.get(config.task.name).head == "seq2seq":
        used.append(config.model.cross_attention)
    return [n for n in used if attention.get(n).capabilities.level == "attention"
            and attention.get(n).capabilities.attention_weights]


def _skip_reason(config) -> str | None:
    if _variants_with_weights(config):
        return None
    name = config.model.attention
    caps = attention.get(name).capabilities
    why = ("a mixer-level baseline: no queries or keys" if caps.level == "mixer"
           else "it never materialises a [query, key] weight matrix")
    return f"{name} has no explicit attention weights ({why})"


def check_has_checkpoint(run_dir: Path) -> None:
    """ConfigError unless run_dir/checkpoints holds a saved step (orbax names them by step)."""
    if not RunDir(run_dir).has_checkpoint():
        raise ConfigError(f"{run_dir} has no checkpoint under {RunDir(run_dir).checkpoints}; "
                          "train the run first")


def restore_params(run_dir: Path, config, model, batch) -> tuple[int, Any]:
    """(step, params) of the latest checkpoint in run_dir/checkpoints."""
    from attnjax import steps  # the TrainState and optimizer the checkpoint was saved with

    check_has_checkpoint(run_dir)
    checkpointer = RunDir(run_dir).checkpointer()
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise ConfigError(f"{run_dir} has no checkpoint under {RunDir(run_dir).checkpoints}")

        def init_state():  # the structure only: eval_shape allocates nothing
            inputs = {k: batch[k] for k in models.INPUT_KEYS if k in batch}
            params = model.init(jax.random.PRNGKey(0), batch["inputs"], **inputs)["params"]
            tx = steps.make_optimizer(config)
            return steps.TrainState(step=np.int32(0), params=params, opt_state=tx.init(params))

        state, _ = checkpointer.restore(step, jax.eval_shape(init_state))  # (state, data pos)
    finally:
        checkpointer.close()
    return int(step), state.params


def example_batch(task, config, split: str, example: int) -> dict[str, np.ndarray]:
    """Example `example` of the split's stream, as a batch of one (same order as evaluation)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if example < 0:
        raise ConfigError(f"example must be >= 0; got {example}")
    index, row = divmod(example, config.batch_size)
    batch = task.batch(split, index, config.batch_size, config.seed)
    return {k: v[row:row + 1] for k, v in batch.items()}


def collect_weights(model, params, batch) -> dict[str, np.ndarray]:
    """{name: weights [heads, q_len, kv_len]} of every layer that recorded some, in layer order.

    Names: `self_attention_layer{i}` (Transformer), `encoder_self_attention_layer{i}`,
    `decoder_self_attention_layer{i}`, `cross_attention_layer{i}` (encoder–decoder).
    """
    inputs = {k: batch[k] for k in models.INPUT_KEYS if k in batch}
    apply = jax.jit(lambda p, x, extra: model.apply({"params": p}, x, **extra,
                                                    mutable=["intermediates"]))
    _, state = apply(params, batch["inputs"], inputs)
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]:
        keys = [getattr(p, "key", getattr(p, "idx", None)) for p in path]
        if "attention_weights" not in keys:
            continue
        stack = keys[0]  # "stack" (Transformer) | "encoder" | "decoder"
        if "layers" in keys:  # model.scan_layers: every layer in one leaf [layers, 1, ...]
            per_layer = list(enumerate(np.asarray(leaf)))
        else:
            layer = next(int(k[len("block_"):]) for k in keys if str(k).startswith("block_"))
            per_layer = [(layer, np.asarray(leaf))]
        sublayer = "cross" if "cross" in keys else "self"
        calls = [k for k in keys[keys.index("attention_weights") + 1:] if isinstance(k, int)]
        for layer, weights in per_layer:
            order = ({"encoder": 0, "stack": 1, "decoder": 1}[stack], sublayer == "cross", layer)
            if sublayer == "cross":
                name = f"cross_attention_layer{layer}"
            else:
                name = f"{'' if stack == 'stack' else stack + '_'}self_attention_layer{layer}"
            if calls and calls[-1] > 0:  # a variant that records twice per call
                name += f"_call{calls[-1]}"
            found.append((order, name, weights[0]))  # [H, Lq, Lk] of the one example
    return {name: w for _, name, w in sorted(found, key=lambda t: t[:2])}


def _tokens_and_masks(name: str, batch) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """(query tokens, key tokens, query mask, key mask) of one attention kind (masks may be
    None = every position is real)."""
    source, source_mask = batch["inputs"][0], batch.get("padding_mask")
    source_mask = None if source_mask is None else source_mask[0]
    if "decoder_inputs" not in batch:
        return source, source, source_mask, source_mask
    target, target_mask = batch["decoder_inputs"][0], batch.get("decoder_padding_mask")
    target_mask = None if target_mask is None else target_mask[0]
    if name.startswith("encoder"):
        return source, source, source_mask, source_mask
    if name.startswith("cross"):
        return target, source, target_mask, source_mask
    return target, target, target_mask, target_mask


# ---------------------------------------------------------------------------- plotting


def plot_heads(weights, query_tokens, key_tokens, title: str, path: Path) -> Path:
    """One heatmap per head in a grid; weights [H, Lq, Lk]; token ids label short axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads, q_len, kv_len = weights.shape
    cols = min(heads, 4)
    rows = math.ceil(heads / cols)
    size = 3.2 if max(q_len, kv_len) <= 32 else 4.2
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 1.2, size * rows + 0.8),
                             squeeze=False, constrained_layout=True)
    vmax = float(max(weights.max(), 1e-12))
    image = None
    for h, ax in enumerate(axes.flat):
        if h >= heads:
            ax.axis("off")
            continue
        image = ax.imshow(weights[h], cmap="viridis", vmin=0.0, vmax=vmax,
                          interpolation="nearest", aspect="auto")
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xlabel("key position" + (" (token id)" if kv_len <= MAX_LABELLED_LENGTH else ""))
        ax.set_ylabel("query position" + (" (token id)" if q_len <= MAX_LABELLED_LENGTH else ""))
        tick_size = 6 if max(q_len, kv_len) <= 24 else 4
        if kv_len <= MAX_LABELLED_LENGTH:
            ax.set_xticks(range(kv_len), [str(t) for t in key_tokens], fontsize=tick_size,
                          rotation=90)
        if q_len <= MAX_LABELLED_LENGTH:
            ax.set_yticks(range(q_len), [str(t) for t in query_tokens], fontsize=tick_size)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- entry points


def render(run_dir, out_dir, *, example: int = 0, split: str = "eval") -> dict:
    """Heatmaps of the attention weights of example `example` of `split` for the run's latest
    checkpoint. Returns {"attention", "images", "skipped", "weights"}; see the module doc."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = load_config(run_dir)
    name = config.model.attention
    result = {"attention": name, "images": [], "skipped": _skip_reason(config), "weights": None}
    check_has_checkpoint(run_dir)  # a missing checkpoint is an error even when skipped
    if result["skipped"]:
        return result
    task = tasks.create(config.task.name, **{k: v for k, v in config.task.items() if k != "name"})
    model = models.build(config.model, task)
    batch = example_batch(task, config, split, example)
    step, params = restore_params(run_dir, config, model, batch)
    weights = collect_weights(model, params, batch)
    if not weights:
        kwargs = dict(config.model.attention_kwargs)
        result["skipped"] = (f"{name} recorded no attention weights with settings {kwargs} "
                             "(e.g. a fused implementation never materialises them)")
        return result
    arrays = {k: v for k, v in batch.items() if k in ("inputs", "decoder_inputs", "padding_mask")}
    for key, w in weights.items():  # w: [H, Lq, Lk]
        q_tokens, k_tokens, q_mask, k_mask = _tokens_and_masks(key, batch)
        shown = w
        if q_mask is not None:  # drop padded queries and keys from the picture only
            shown, q_tokens = shown[:, q_mask], q_tokens[q_mask]
        if k_mask is not None:
            shown, k_tokens = shown[:, :, k_mask], k_tokens[k_mask]
        layer = key.rsplit("layer", 1)[1]
        kind = key.rsplit("_layer", 1)[0].replace("_", " ")
        variant = config.model.cross_attention if key.startswith("cross") else name
        title = (f"{variant} — {run_dir.resolve().name} — layer {layer} ({kind}) — step {step}\n"
                 f"{split} example {example}")
        result["images"].append(plot_heads(shown, q_tokens, k_tokens, title,
                                           out_dir / f"{key}.png"))
    result["weights"] = out_dir / "attention_weights.npz"
    rundir.atomic_write(result["weights"], lambda tmp: np.savez_compressed(
        tmp, **weights, **{f"batch_{k}": v[0] for k, v in arrays.items()},
        step=np.int64(step)))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attnjax heatmap", description="Attention heatmaps from a run's latest checkpoint.")
    parser.add_argument("run_dir", help="a run directory (holds config.json and checkpoints/)")
    parser.add_argument("--out", help="output folder (default RUN_DIR/heatmaps)")
    parser.add_argument("--example", type=int, default=0,
                        help="which example of the split (row of the eval stream; default 0)")
    parser.add_argument("--split", choices=SPLITS, default="eval")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    result = render(run_dir, Path(args.out) if args.out else run_dir / "heatmaps",
                    example=args.example, split=args.split)
    if result["skipped"]:
        print(f"skipped: {result['skipped']}")
        return 0
    for path in result["images"]:
        print(path)
    print(result["weights"])
    return 0
