"""Induction heads: "... S b ... S" -> b, copying what followed a trigger earlier.

Papers: Olsson et al. 2022, "In-context Learning and Induction Heads" (arXiv:2209.11895); the
synthetic task of Fu, Dao et al. 2023 (H3, arXiv:2212.14052) used by Gu & Dao 2023, "Mamba"
(arXiv:2312.00752) §4.1.2 (V = 16, trained at L = 256, tested up to 2^20).
Tests: the two-step circuit (previous-token head + match head) of associative recall from
context; `with_length` probes whether it extrapolates to longer sequences.

Layout of one sequence (L = seq_len, V = vocab_size):
  [0, L-1)      uniform content tokens from [1, V), except the trigger S = 0 at one position
                p ∈ [0, L-3] (uniform), so b = the token at p+1 is content and p+1 <= L-2
  L-1           the trigger S again
Ids: 0 trigger, [1, V) content; the trigger appears exactly twice. Scored: only position L-1
(`positions`, `targets`, `weights`, T = 1), label b. Other repeats of b or of any content token
are unscored noise.
Cost: vectorised numpy, O(B · L) per batch (~0.1 ms for 64 × 256); a model is scored on 1 of
L positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks.base import LMTask, with_defaults

TRIGGER, FIRST = 0, 1


@dataclasses.dataclass(frozen=True)
class InductionHeads(LMTask):
    """The induction heads task. Settings below; layout in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    vocab_size: int = 16  # ids: 0 trigger, [1, V) content
    seq_len: int = 64  # L

    def __post_init__(self):
        problems = []
        if self.vocab_size <= FIRST + 1:
            problems.append(f"vocab_size={self.vocab_size} must be >= 3 (id 0 is the trigger; "
                            "content needs at least two ids)")
        if self.seq_len < 3:
            problems.append(f"seq_len={self.seq_len} must be >= 3 (trigger, its token, trigger)")
        if problems:
            raise ConfigError("induction_heads: " + "; ".join(problems))

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / (vocab_size - 1): the answer is a uniform content token from [1, V)."""
        return 1.0 / (with_defaults(cls, settings)["vocab_size"] - 1)

    @property
    def max_length(self) -> int:
        return self.seq_len

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        b, length = batch_size, self.seq_len
        rows = np.arange(b)  # [B]
        inputs = rng.integers(FIRST, self.vocab_size, size=(b, length), dtype=np.int32)  # [B, L]
        first = rng.integers(0, length - 2, size=b)  # [B], the first trigger's position p
        inputs[rows, first] = TRIGGER
        inputs[:, -1] = TRIGGER
        return {
            "inputs": inputs,  # [B, L]
            "positions": np.full((b, 1), length - 1, np.int32),  # [B, 1]
            "targets": inputs[rows, first + 1][:, None].copy(),  # [B, 1], b
            "weights": np.ones((b, 1), np.float32),  # [B, 1]
        }


TASK = InductionHeads
