"""Byte-level language modelling of a local file (enwik8 style).

Data: Hutter Prize enwik8 (the first 10^8 bytes of an English Wikipedia XML dump; Mahoney 2006),
as used by Al-Rfou et al. 2018 and Transformer-XL (Dai et al. 2019), scored in bits per byte.
Any file works: its bytes are the tokens (ids 0..255, vocab 256; no padding).
`source="synthetic"` (no file) models a deterministic stand-in instead, for benchmarks and
smoke runs (`attnjax bench train`): `synthetic_bytes` bytes of "text" drawn once from a fixed
seed — words of 1-10 random lowercase letters from a vocabulary of 2048, chosen with Zipf
frequencies (exponent 1.1) and separated by spaces — so there is something to learn (word
spelling and frequency) but no long-range structure.
Tests: long-context modelling of real text — dependencies from within a word to across pages.

Splits (the standard enwik8 split): the first 1 - valid_fraction - test_fraction of the file
(90%) is train, the next valid_fraction (5%) eval, the last test_fraction (5%) test.
Windows: inputs are seq_len bytes, targets the next byte at each position (inputs shifted by
one byte of the file; T = L, no positions, weights 1), so a window reads L + 1 bytes.
  train: K = max((n - L) // L, 1) non-overlapping windows per epoch, read in the epoch's
         permutation (see _epochs.py) and shifted by a per-epoch offset drawn from
         default_rng([seed, epoch, 1]) in [0, n - 1 - K·L] (>= L - 1 when n >= 2L), so window
         boundaries move between epochs; every window of an epoch is seen exactly once.
  eval / test: the (n - 1) // L non-overlapping windows from the split's start, in order (batch
         i is windows [i·B, (i+1)·B), wrapping around), the same for every run.
Metrics: loss (nats per byte), accuracy, and bits_per_byte = loss / ln 2.
Cost: the file is memory-mapped (nothing is read up front); a batch reads B·(L + 1) bytes.
The synthetic stream is made in memory when the task is created (~0.1 s for 4 MiB).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks import _files
from attnjax.tasks._epochs import EpochBatches
from attnjax.tasks.base import LMTask

NAME = "bytes_lm"
EXPECTED = "a file whose bytes are the text to model, e.g. enwik8 (unzipped)"


SOURCES = ("file", "synthetic")
SYNTHETIC_WORDS = 2048  # vocabulary of the synthetic stream
SYNTHETIC_ZIPF = 1.1  # word frequency ~ rank^-1.1


@functools.lru_cache(maxsize=2)
def _bytes(path: str, stamp: tuple) -> np.ndarray:
    """The file's bytes, memory-mapped: uint8 [n]."""
    return np.memmap(path, dtype=np.uint8, mode="r")


@functools.lru_cache(maxsize=2)
def synthetic_bytes(size: int) -> np.ndarray:
    """The synthetic stream: uint8 [size], the same on every machine (seed 0)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 11, SYNTHETIC_WORDS) + 1  # letters + the space after
    starts = np.cumsum(lengths) - lengths
    table = rng.integers(ord("a"), ord("z") + 1, lengths.sum()).astype(np.uint8)
    table[starts + lengths - 1] = ord(" ")
    p = 1.0 / np.arange(1, SYNTHETIC_WORDS + 1) ** SYNTHETIC_ZIPF
    ids = rng.choice(SYNTHETIC_WORDS, size=size // 2 + 1, p=p / p.sum())  # >= size bytes
    taken = lengths[ids]
    offsets = np.cumsum(taken) - taken  # where each chosen word starts in the stream
    index = np.repeat(starts[ids] - offsets, taken) + np.arange(taken.sum())
    out = table[index[:size]]
    out.flags.writeable = False
    return out


@dataclasses.dataclass(frozen=True)
class BytesLM(EpochBatches, LMTask):
    """Next-byte prediction over a local file. Splits and windows in the module docstring."""

    needs_data = True
    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len
    shuffle_eval = False  # eval / test windows in file order

    path: str = ""  # the file (e.g. /data/enwik8); source="file" only
    source: str = "file"  # "file" | "synthetic" (a generated stream, no file: see above)
    synthetic_bytes: int = 1 << 22  # length of the synthetic stream (source="synthetic")
    seq_len: int = 512  # L: input bytes per window
    valid_fraction: float = 0.05  # of the file after train: eval (enwik8: 5M of 100M)
    test_fraction: float = 0.05  # the end of the file: test (enwik8: 5M of 100M)

    def __post_init__(self):
        problems = _files.check_fractions(NAME, self.valid_fraction, self.test_fraction)
        if self.seq_len < 1:
            problems.append(f"seq_len must be >= 1 (got {self.seq_len})")
        if self.source not in SOURCES:
            problems.append(f"source must be one of {', '.join(SOURCES)} (got {self.source!r})")
        elif self.source == "synthetic" and self.path:
            problems.append(f"source='synthetic' reads no file; drop path={self.path!r}")
        if self.synthetic_bytes < 1:
            problems.append(f"synthetic_bytes must be >= 1 (got {self.synthetic_bytes})")
        if problems:
            raise ConfigError(f"{NAME}: " + "; ".join(problems))
        if self.source == "synthetic":
            where, size = "the synthetic stream", self.synthetic_bytes
            object.__setattr__(self, "_key", None)
        else:
            path = _files.require_path(NAME, self.path, EXPECTED)
            if not path.is_file():
                raise ConfigError(f"task {NAME}: task.path={self.path!r} is a folder; expected "
                                  f"{EXPECTED}")
            object.__setattr__(self, "_key", (str(path), _files.stamp(path)))
            where, size = str(path), path.stat().st_size
        bounds = self._bounds(size)
        short = {s: hi - lo for s, (lo, hi) in bounds.items() if hi - lo < self.seq_len + 1}
        if short:
            raise ConfigError(
                f"task {NAME}: {where} ({size} bytes) leaves split(s) with fewer than seq_len + 1"
                f" = {self.seq_len + 1} bytes: {short}; use a larger file (synthetic_bytes) or "
                "a smaller seq_len"
            )

    def _bounds(self, size: int) -> dict[str, tuple[int, int]]:
        """{split: (first byte, end byte)} of a file of `size` bytes."""
        n_valid, n_test = int(size * self.valid_fraction), int(size * self.test_fraction)
        n_train = size - n_valid - n_test
        return {"train": (0, n_train), "eval": (n_train, n_train + n_valid),
                "test": (n_train + n_valid, size)}

    def _split(self, split: str) -> np.ndarray:
        data = synthetic_bytes(self.synthetic_bytes) if self._key is None else _bytes(*self._key)
        lo, hi = self._bounds(len(data))[split]
        return data[lo:hi]

    @property
    def vocab_size(self) -> int:
        return 256

    @property
    def max_length(self) -> int:
        return self.seq_len

    def split_size(self, split: str) -> int:
        n, length = len(self._split(split)), self.seq_len
        return max((n - length) // length, 1) if split == "train" else (n - 1) // length

    def rows(self, split, ids, epochs, seed):
        data, length = self._split(split), self.seq_len
        starts = ids * length  # [b]
        if split == "train":  # a per-epoch shift of every window
            slack = len(data) - 1 - self.split_size("train") * length
            for epoch in np.unique(epochs):
                shift = np.random.default_rng([seed, int(epoch), 1]).integers(slack + 1)
                starts[epochs == epoch] += shift
        windows = np.asarray(data[starts[:, None] + np.arange(length + 1)]).astype(np.int32)
        return {  # windows [b, L + 1]
            "inputs": windows[:, :-1],  # [B, L]
            "targets": windows[:, 1:],  # [B, L]: the next byte
            "weights": np.ones((len(ids), length), np.float32),  # [B, L]
        }

    def loss_and_metrics(self, logits, batch):
        loss_sum, count, metrics = super().loss_and_metrics(logits, batch)
        metrics["bits_per_byte"] = (loss_sum / math.log(2), count)
        return loss_sum, count, metrics


TASK = BytesLM
