"""Selective copying: copy the content tokens scattered among noise, ignoring the noise.

Paper: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(arXiv:2312.00752) §3.1 and figure 2 (after Jing et al. 2019's variable copying). Tests:
content-aware selection — the content positions vary per sequence, so no fixed delay or
convolution kernel solves it (unlike `copy`); a model must decide per token what to remember.

Layout of one sequence (N = num_tokens, L = seq_len, P = L - N, K = num_noise_ids):
  [0, P)        N content tokens at random distinct positions, in order, uniform with
                replacement over [K+1, V); every other position is noise, uniform over [0, K)
  [P, L)        N markers (id K); the i-th marker (position P+i-1) is scored with label c_i
Ids: [0, K) noise (K = 1: the single blank token 0 of Mamba's figure), K marker, [K+1, V)
content. Scored: the N marker positions (`positions`, `targets`, `weights`, T = N); the targets
are exactly the non-noise tokens of [0, P) in order and depend on nothing else (`arrange`).
`with_length` keeps N and widens the region the tokens are scattered over.
Cost: vectorised numpy, O(B · L log L) per batch (an argsort picks the positions; ~0.3 ms
for 64 × 256).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks.base import LMTask, with_defaults


@dataclasses.dataclass(frozen=True)
class SelectiveCopy(LMTask):
    """The selective copying task. Settings below; layout in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    vocab_size: int = 16  # ids: [0, K) noise, K marker, [K+1, V) content (Mamba: V = 16)
    seq_len: int = 64  # L = P (region with the scattered tokens) + num_tokens (markers)
    num_tokens: int = 8  # N, content tokens to copy (Mamba: 16 in a region of 4096)
    num_noise_ids: int = 1  # K, distinct noise ids (1: a single blank token)

    def __post_init__(self):
        v, n, k, length = self.vocab_size, self.num_tokens, self.num_noise_ids, self.seq_len
        problems = []
        if k < 1:
            problems.append(f"num_noise_ids must be >= 1 (got {k})")
        elif v <= k + 1:
            problems.append(f"vocab_size={v} must be > num_noise_ids + 1 = {k + 1} (ids [0, {k}) "
                            f"noise, {k} marker, content from {k + 1})")
        if n < 1:
            problems.append(f"num_tokens must be >= 1 (got {n})")
        elif length < 2 * n:
            problems.append(f"seq_len={length} must be >= 2*num_tokens={2 * n} (a region of "
                            "seq_len - num_tokens positions holds the tokens, then num_tokens "
                            "markers)")
        if problems:
            raise ConfigError("selective_copy: " + "; ".join(problems))

    @property
    def marker(self) -> int:
        return self.num_noise_ids

    @classmethod
    def chance_accuracy(cls, settings):
        """1 / (V - K - 1): each copied token is uniform over the content ids [K+1, V)."""
        s = with_defaults(cls, settings)
        return 1.0 / (s["vocab_size"] - s["num_noise_ids"] - 1)

    @property
    def max_length(self) -> int:
        return self.seq_len

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        b, n, k = batch_size, self.num_tokens, self.num_noise_ids
        region = self.seq_len - n  # P
        content = rng.integers(k + 1, self.vocab_size, size=(b, n))  # [B, N]
        # N distinct positions per row: first N of a random permutation, then in order
        slots = np.sort(np.argsort(rng.random((b, region)), axis=1)[:, :n], axis=1)  # [B, N]
        noise = (rng.integers(0, k, size=(b, region)) if k > 1
                 else np.zeros((b, region), np.int64))  # [B, P]
        return self.arrange(content, slots, noise)

    def arrange(self, content: np.ndarray, slots: np.ndarray,
                noise: np.ndarray) -> dict[str, np.ndarray]:
        """The batch for content [B, N] at increasing positions slots [B, N] of a region filled
        with noise [B, P] (ids < K). The targets are `content`, whatever the slots and noise."""
        (b, n), region = content.shape, noise.shape[1]
        inputs = np.full((b, region + n), self.marker, np.int32)  # [B, L]
        inputs[:, :region] = noise
        inputs[np.arange(b)[:, None], slots] = content
        positions = np.broadcast_to(np.arange(region, region + n, dtype=np.int32), (b, n))
        return {
            "inputs": inputs,  # [B, L]
            "positions": positions.copy(),  # [B, N]
            "targets": content.astype(np.int32),  # [B, N]
            "weights": np.ones((b, n), np.float32),  # [B, N]
        }


TASK = SelectiveCopy
