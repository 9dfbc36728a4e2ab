"""Copying: memorise a few tokens, wait, then reproduce them in order.

Papers: Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks"
(arXiv:1511.06464) §4.1 (after Hochreiter & Schmidhuber 1997); Gu & Dao 2023, "Mamba"
(arXiv:2312.00752) §3.1, which notes that the fixed delay makes it solvable by time-invariant
models (a long convolution) — `selective_copy` removes that shortcut.
Tests: memory over a fixed delay; an attention model needs only a fixed relative offset.

Layout of one sequence (N = num_tokens, L = seq_len, D = L - 2N = the delay, V = vocab_size):
  [0, N)        c_1 ... c_N      content, uniform with replacement over [2, V)
  [N, N+D)      0 ... 0          blanks
  [N+D, L)      1 ... 1          N markers; the i-th marker (position N+D+i-1) is scored with
                                 label c_i
Ids: 0 blank, 1 marker, content [2, V). Arjovsky et al. feed one delimiter and then blanks during
the output phase; here every output slot is a marker (as Mamba's figure 2) — the same task up to
the ids fed there. The model is never fed its own outputs (no teacher forcing).
Scored: the N marker positions (`positions`, `targets`, `weights`, T = N; weights all ones).
`with_length` keeps N and lengthens the delay.
Cost: vectorised numpy, O(B · L) per batch (~0.05 ms for 64 × 256); a model is scored on N of
L positions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks.base import LMTask, with_defaults

BLANK, MARKER, FIRST = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Copy(LMTask):
    """The copying task. Settings below; layout in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len (delay)

    vocab_size: int = 10  # ids: 0 blank, 1 marker, [2, V) content (Arjovsky: 8 symbols)
    seq_len: int = 32  # L = 2 * num_tokens + delay
    num_tokens: int = 8  # N, tokens to copy

    def __post_init__(self):
        problems = []
        if self.vocab_size <= FIRST:
            problems.append(f"vocab_size={self.vocab_size} must be > {FIRST} (ids 0 blank, "
                            "1 marker, content from 2)")
        if self.num_tokens < 1:
            problems.append(f"num_tokens must be >= 1 (got {self.num_tokens})")
        elif self.seq_len < 2 * self.num_tokens:
            problems.append(f"seq_len={self.seq_len} must be >= 2*num_tokens="
                            f"{2 * self.num_tokens} (N content tokens, then N markers; the "
                            "delay is seq_len - 2*num_tokens)")
        if problems:
            raise ConfigError("copy: " + "; ".join(problems))

    @property
    def delay(self) -> int:
        """D: blanks between the content and the first marker."""
        return self.seq_len - 2 * self.num_tokens

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / (vocab_size - 2): each copied token is uniform over the content ids [2, V)."""
        return 1.0 / (with_defaults(cls, settings)["vocab_size"] - 2)

    @property
    def max_length(self) -> int:
        return self.seq_len

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        b, n, length = batch_size, self.num_tokens, self.seq_len
        content = rng.integers(FIRST, self.vocab_size, size=(b, n), dtype=np.int32)  # [B, N]
        inputs = np.full((b, length), BLANK, np.int32)  # [B, L]
        inputs[:, :n] = content
        inputs[:, length - n :] = MARKER
        positions = np.broadcast_to(np.arange(length - n, length, dtype=np.int32), (b, n))
        return {
            "inputs": inputs,  # [B, L]
            "positions": positions.copy(),  # [B, N]
            "targets": content,  # [B, N]
            "weights": np.ones((b, n), np.float32),  # [B, N]
        }


TASK = Copy
