"""The task contract: a deterministic data source, the head it needs, its loss and metrics.

A task is a frozen dataclass subclass of `LMTask` or `ClassificationTask` in
`attnjax/tasks/<name>.py`, exported as `TASK`. Its dataclass fields are its settings (every one
has a default); `config.task` holds `name` plus any of them.

Data: `task.batch(split, index, batch_size, seed, shard=0, num_shards=1)` returns a dict of
numpy arrays and is a pure function of its arguments: shard `shard` of `num_shards` equal row
blocks of global batch `index` (a multi-host run generates only its own block). Synthetic tasks
write only `generate(rng, rows)`; its rng is np.random.default_rng([seed, split_id, index]) for
one shard, [seed, split_id, index, shard, num_shards] for several. Real-data tasks override
`batch` and take rows of a per-epoch permutation, so their stream does not depend on the shards.
Training reads batch `index = step`, so resuming at step s sees exactly the batches an
uninterrupted run sees. The splits "eval" (validation: model selection) and "test" (reported,
never selected on) use fixed seeds, so every run of a study is scored on identical data.

Length generalisation: a task whose `length_field` names the setting that sets its sequence
length can be rebuilt at another length with `task.with_length(L)` (config `eval_lengths`).

Batch formats (B = batch, L = length, T = predicted positions):
  LM ("lm" head):
    inputs   int32 [B, L]   token ids fed to the model
    targets  int32 [B, T]   token to predict
    weights  f32   [B, T]   1 where the loss counts, 0 elsewhere
    positions int32 [B, T]  (optional) which input position predicts each target; the model
                            computes logits only there. Absent: T = L, position t predicts t.
  Sequence to sequence ("seq2seq" head, an encoder–decoder):
    inputs, padding_mask      the source [B, Ls] and its real-token mask
    decoder_inputs int32 [B, Lt]  the target shifted right behind a BOS token
    targets, weights          [B, Lt] as for LM (weights 0 after the target's end)
  Classification ("classification" head):
    inputs   int32 [B, L]
    targets  int32 [B]
    padding_mask bool [B, L]  True at real tokens (pooling and attention ignore the rest)

Metrics are returned as sums with their counts, {name: (sum, count)}, so they average exactly
over devices, batches and eval sets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnjax.registry import ConfigError

SPLITS = {"train": 0, "eval": 1, "test": 2}
EVAL_SEED = 1_000_003  # the seed of the "eval" and "test" streams (they differ by split id)


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of all tasks. Subclasses add settings as dataclass fields with defaults."""

    head: ClassVar[str] = ""  # "lm" | "classification" | "seq2seq"
    causal: ClassVar[bool] = False  # does the model run causally on this task?
    length_field: ClassVar[str | None] = None  # the setting that sets the sequence length
    needs_data: ClassVar[bool] = False  # reads local files (settings name them)

    @property
    def output_size(self) -> int:
        """Vocabulary size (lm) or number of classes (classification)."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:  # input vocabulary (subclasses with a field override this)
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        """Length L of `inputs`."""
        raise NotImplementedError

    def batch(self, split: str, index: int, batch_size: int, seed: int, shard: int = 0,
              num_shards: int = 1) -> dict[str, np.ndarray]:
        """Rows [shard·B/n, (shard+1)·B/n) of global batch `index` of `split` (B = batch_size)."""
        rows = check_shard(batch_size, shard, num_shards)
        key = [seed if split == "train" else EVAL_SEED, SPLITS[split], index]
        if num_shards > 1:
            key += [shard, num_shards]
        return self.generate(np.random.default_rng(key), rows)

    @classmethod
    def chance_accuracy(cls, settings: dict[str, Any]) -> float | None:
        """The `accuracy` a model gets without solving the task, for a run whose `config.task`
        is `settings` (missing settings take their defaults; `name` is ignored). Read from run
        dirs by `attnjax compare` (no task is built, no data read): the dashed "chance" line of
        its plots and its "at chance" flag. None where there is no simple level (the default).
        """
        return None

    @classmethod
    def input_length(cls, settings: dict[str, Any]) -> int | None:
        """The input length L for `settings` without building the task: the `length_field`
        setting (or its default); None when only the data knows it."""
        value = with_defaults(cls, settings).get(cls.length_field or "")
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else None

    def with_length(self, length: int) -> Task:
        """This task with sequence length `length` (for length generalisation)."""
        if self.length_field is None:
            raise ConfigError(
                f"task {type(self).__name__} has no length setting, so it cannot be evaluated "
                "at other lengths (eval_lengths)"
            )
        return dataclasses.replace(self, **{self.length_field: int(length)})

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """One batch from `rng`. The only method a synthetic task must write."""
        raise NotImplementedError

    def loss_and_metrics(self, logits, batch) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        """(loss_sum, weight_sum, {metric: (sum, count)}) for one (per-device) batch."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class LMTask(Task):
    """Next-token style prediction; loss and accuracy only where `weights` > 0."""

    head: ClassVar[str] = "lm"
    causal: ClassVar[bool] = True

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def loss_and_metrics(self, logits, batch):
        # logits [B, T, V] float; targets/weights [B, T]
        targets, weights = batch["targets"], batch["weights"].astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets
        )
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        loss_sum, count = jnp.sum(losses * weights), jnp.sum(weights)
        # an example is right when every weighted position is right
        all_right = jnp.all((correct > 0) | (weights == 0), axis=-1).astype(jnp.float32)
        metrics = {
            "loss": (loss_sum, count),
            "accuracy": (jnp.sum(correct * weights), count),
            "sequence_accuracy": (jnp.sum(all_right), jnp.float32(targets.shape[0])),
        }
        return loss_sum, count, metrics


@dataclasses.dataclass(frozen=True)
class Seq2SeqTask(LMTask):
    """Source -> target with an encoder–decoder; loss per target token (teacher forcing)."""

    head: ClassVar[str] = "seq2seq"
    causal: ClassVar[bool] = True  # the decoder; the encoder is always bidirectional

    @property
    def max_target_length(self) -> int:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Task):
    """Sequence classification: one label per sequence, cross-entropy over `num_classes`."""

    head: ClassVar[str] = "classification"
    causal: ClassVar[bool] = False

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        return self.num_classes

    def loss_and_metrics(self, logits, batch):
        # logits [B, C]; targets [B]
        targets = batch["targets"]
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), targets
        )
        correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
        n = jnp.float32(targets.shape[0])
        metrics = {"loss": (jnp.sum(losses), n), "accuracy": (jnp.sum(correct), n)}
        return jnp.sum(losses), n, metrics


def with_defaults(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` over the task class's defaults (its dataclass fields), without `name`."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    return {**defaults, **{k: v for k, v in settings.items() if k != "name"}}


def check_shard(batch_size: int, shard: int, num_shards: int) -> int:
    """Rows per shard; the batch must split evenly."""
    if num_shards < 1 or not 0 <= shard < num_shards or batch_size % num_shards:
        raise ValueError(f"cannot take shard {shard} of {num_shards} of a batch of {batch_size}")
    return batch_size // num_shards


def finalize(metric_sums: dict[str, tuple[Any, Any]]) -> dict[str, float]:
    """{name: (sum, count)} -> {name: sum / count} as Python floats."""
    host = jax.device_get(metric_sums)
    return {k: float(np.asarray(s).sum() / max(float(np.asarray(c).sum()), 1e-12))
            for k, (s, c) in host.items()}
