"""Associative recall (AR): one query after a list of key–value pairs.

Papers: Ba et al. 2016, "Using Fast Weights to Attend to the Recent Past" (arXiv:1610.06258);
Fu, Dao et al. 2023, "Hungry Hungry Hippos" (H3, arXiv:2212.14052) §3.1; the single-query case
of Zoology's MQAR (Arora et al. 2023, arXiv:2312.04927; see `mqar.py`).
Tests: in-context lookup of one binding, e.g. "a 2 c 4 b 3 d 1 a -> 2". Attention solves it in
one hop; fixed-state mixers must keep every pair in their state until the query arrives. Easier
than MQAR (one query, not N), which is why H3-style models that pass AR can still fail MQAR.

Layout of one sequence (N = num_kv_pairs, L = seq_len, V = vocab_size):
  [0, 2N)       k1 v1 k2 v2 ... kN vN   keys distinct from [1, V//2), values distinct from
                                        [V//2, V) (the draw `mqar` uses, `_kv.py`)
  [2N, L-1)     filler 0 (none when N = (L-1)//2 and L is odd: the classic layout)
  L-1           the query: one of the N keys, uniform
Scored: only position L-1 (`positions`, `targets`, `weights`, T = 1); the label is the value
paired with the query key. num_kv_pairs = 0 (default) takes as many pairs as fit, (L-1)//2, so
`with_length` grows the number of pairs; a fixed N > 0 instead grows the key–query distance.
Cost: vectorised numpy, O(B · (V + L)) per batch (~0.5 ms for 64 × 257, V = 512); a model
is scored on 1 of L positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _kv
from attnjax.tasks.base import LMTask, with_defaults


@dataclasses.dataclass(frozen=True)
class AssociativeRecall(LMTask):
    """Single-query associative recall. Settings below; layout in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    vocab_size: int = 64  # ids: 0 filler, [1, V//2) keys, [V//2, V) values
    seq_len: int = 32  # L, the input length
    num_kv_pairs: int = 0  # N; 0 = as many as fit, (seq_len - 1) // 2

    def __post_init__(self):
        v, n, length = self.vocab_size, self.num_pairs, self.seq_len
        problems = []
        if self.num_kv_pairs < 0:
            problems.append(f"num_kv_pairs must be >= 0 (got {self.num_kv_pairs}; 0 = fill "
                            "seq_len)")
        elif length < 3:
            problems.append(f"seq_len={length} must be >= 3 (one pair and the query)")
        elif 2 * n + 1 > length:
            problems.append(f"num_kv_pairs={n} needs seq_len >= 2*N+1 = {2 * n + 1} (got "
                            f"{length}); use num_kv_pairs <= {(length - 1) // 2} or 0")
        elif vocab := _kv.vocab_problem(v, n):
            problems.append(vocab + ("" if self.num_kv_pairs else
                                     f" (num_kv_pairs=0 takes (seq_len-1)//2 = {n} pairs; set "
                                     "num_kv_pairs to fix the number of pairs)"))
        if problems:
            raise ConfigError("associative_recall: " + "; ".join(problems))

    @property
    def num_pairs(self) -> int:
        """N: num_kv_pairs, or (seq_len - 1) // 2 when it is 0."""
        return self.num_kv_pairs or (self.seq_len - 1) // 2

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / N: picking one of the N distinct in-context values at random (N = num_kv_pairs, or
        (seq_len - 1) // 2 when 0), the plateau before recall is learnt; a uniform guess over
        the vocabulary would be 1 / vocab_size."""
        s = with_defaults(cls, settings)
        return 1.0 / (s["num_kv_pairs"] or (s["seq_len"] - 1) // 2)

    @property
    def max_length(self) -> int:
        return self.seq_len

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        b, n, length = batch_size, self.num_pairs, self.seq_len
        rows = np.arange(b)  # [B]
        keys, values = _kv.draw_keys_values(rng, b, n, self.vocab_size)  # [B, N] each
        query = rng.integers(0, n, size=b)  # [B], which pair is asked for
        inputs = np.zeros((b, length), np.int32)
        inputs[:, 0 : 2 * n : 2] = keys
        inputs[:, 1 : 2 * n : 2] = values
        inputs[:, -1] = keys[rows, query]
        return {
            "inputs": inputs,  # [B, L]
            "positions": np.full((b, 1), length - 1, np.int32),  # [B, 1]
            "targets": values[rows, query][:, None].astype(np.int32),  # [B, 1]
            "weights": np.ones((b, 1), np.float32),  # [B, 1]
        }


TASK = AssociativeRecall
