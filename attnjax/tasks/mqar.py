"""Multi-query associative recall (MQAR).

Paper: Arora, Eyuboglu et al. 2023, "Zoology: Measuring and Improving Recall in Efficient
Language Models" (arXiv:2312.04927); generator follows `zoology/data/associative_recall.py`.
Tests: in-context recall of many key→value bindings at once — the gap between softmax attention
and fixed-size-state mixers (linear attention, SSMs, convolutions) grows with `num_kv_pairs`.

Layout of one sequence (N = num_kv_pairs, L = seq_len, V = vocab_size):
  [0, 2N)    k1 v1 k2 v2 ... kN vN   keys distinct (drawn without replacement) from [1, V//2),
                                     values distinct (without replacement, as Zoology) from
                                     [V//2, V)
  [2N, L)    filler, with each key k_i re-inserted once as a query at position 2N + 2·g_i
  The label at the query position is v_i (a causal model predicts it from the query's state).
The gaps g_i ∈ [0, (L-2N)//2) are drawn without replacement with P(g) ∝ (g+1)^(power_a-1)
(power_a → 0: queries bunch right after the kv block; power_a = 1: uniform); like Zoology, the
first-drawn gap (usually the smallest) goes to the first pair. Filler (`filler`):
  "zero"    token 0 (Zoology's layout with random_non_queries=False; id 0 is never a key/value)
  "random"  uniform over the value ids [V//2, V): never a key, so the only keys after the kv
            block are the queries, and queries can't be spotted as "the non-zero tokens"
  "zoology" uniform over all of [0, V) (Zoology's default random_non_queries=True); fillers may
            repeat keys (unscored positions that can mislead a lookup)
Scored: only the N query positions (`positions`, `targets`, `weights`, T = N; every query
always fits, so weights are all ones).
Cost: generation is vectorised numpy, O(B·(V + L)), ~0.3 ms per 64 × 256 batch; a model
pays O(L²) (softmax) vs O(L) (recurrent) over L tokens but is scored on N of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _kv
from attnjax.tasks.base import LMTask, with_defaults

FILLERS = ("zero", "random", "zoology")


@dataclasses.dataclass(frozen=True)
class MQAR(LMTask):
    """Multi-query associative recall (Zoology). Settings below; layout in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    vocab_size: int = 64  # ids: 0 filler, [1, V//2) keys, [V//2, V) values
    seq_len: int = 64  # L, the input length
    num_kv_pairs: int = 8  # N, pairs in the kv block = queries per sequence
    power_a: float = 0.01  # power-law exponent of query gaps (Zoology's power_a)
    filler: str = "zero"  # "zero" | "random" | "zoology" (see module docstring)

    def __post_init__(self):
        v, n, length = self.vocab_size, self.num_kv_pairs, self.seq_len
        problems = []
        if n < 1:
            problems.append(f"num_kv_pairs must be >= 1 (got {n})")
        if vocab := _kv.vocab_problem(v, n):
            problems.append(vocab)
        if length < 4 * n:
            problems.append(
                f"seq_len={length} must be >= 4*num_kv_pairs={4 * n} (the kv block takes 2N "
                "tokens and N queries need N gap slots of 2 tokens after it)"
            )
        if not self.power_a > 0:
            problems.append(f"power_a must be > 0 (got {self.power_a}); 1.0 is uniform")
        if self.filler not in FILLERS:
            problems.append(f"filler must be one of {FILLERS} (got {self.filler!r})")
        if problems:
            raise ConfigError("mqar: " + "; ".join(problems))

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / num_kv_pairs: the plateau of a model that has learnt that the answer is one of the
        N values in the kv block but not which (values are distinct within a sequence), where
        MQAR training curves sit before recall is learnt. True chance, a uniform guess over the
        vocabulary, is lower: 1 / vocab_size."""
        return 1.0 / with_defaults(cls, settings)["num_kv_pairs"]

    @property
    def max_length(self) -> int:
        return self.seq_len

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        b, n, length, v = batch_size, self.num_kv_pairs, self.seq_len, self.vocab_size
        half = v // 2
        rows = np.arange(b)[:, None]  # [B, 1]
        keys, values = _kv.draw_keys_values(rng, b, n, v)  # [B, N] each, distinct per row
        # gaps without replacement, P ∝ (g+1)^(a-1): Gumbel-top-k equals sequential draws
        space = (length - 2 * n) // 2
        log_p = (self.power_a - 1.0) * np.log(np.arange(1, space + 1))  # [S]
        gaps = np.argsort(-(log_p + rng.gumbel(size=(b, space))), axis=1)[:, :n]  # [B, N]

        if self.filler == "zero":
            inputs = np.zeros((b, length), np.int32)
        elif self.filler == "random":
            inputs = rng.integers(half, v, size=(b, length), dtype=np.int32)
        else:
            inputs = rng.integers(0, v, size=(b, length), dtype=np.int32)
        inputs[:, 0 : 2 * n : 2] = keys
        inputs[:, 1 : 2 * n : 2] = values
        positions = (2 * n + 2 * gaps).astype(np.int32)  # [B, N], query i at positions[:, i]
        inputs[rows, positions] = keys
        return {
            "inputs": inputs,  # [B, L]
            "positions": positions,  # [B, N]
            "targets": values.astype(np.int32),  # [B, N]
            "weights": np.ones((b, n), np.float32),  # [B, N]
        }


TASK = MQAR
