"""ListOps: evaluate a nested prefix expression over digits.

Papers: Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning"
(arXiv:1804.06028); Tay et al. 2020, "Long Range Arena" (arXiv:2011.04006), whose generator
(`lra_benchmarks/data/listops.py`) this follows.
Tests: hierarchical, long-range composition — a model must track bracket nesting across hundreds
of tokens to reduce sub-expressions; 10-way classification of the result.

Example: `[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]` → 5.
Operators: MIN, MAX, MED (median; for an even count the floor of the mean of the two middle
values, i.e. LRA's `int(np.median(...))`), SM (sum mod 10). Tokens are those of the standard
LRA tokenisation (as in S4 et al.: operator-open tokens, digits, "]"; LRA's "( )" grouping
parentheses are dropped): 0 pad, 1..10 digits 0..9, 11 [MIN, 12 [MAX, 13 [MED, 14 [SM, 15 ].

Generation (LRA's `generate_tree`): the root is at depth 1; a node above `max_depth` is an
operator with probability `op_prob` (LRA's VALUE_P = 0.25 — note LRA returns a digit when
random() > VALUE_P, so its digit probability is 0.75) with uniform 2..max_args arguments and a
uniform operator, otherwise (and always at depth max_depth) a uniform digit; so at most
max_depth - 1 operators nest. Trees with min_len <= length <= seq_len tokens are kept (LRA:
500 < length < 2000, padded to 2000 — `seq_len=2000, min_len=501`; it allows length 1999).
Unlike LRA, samples are i.i.d. (no de-duplication across the dataset). 3 in 4 trees are a lone
digit, so `min_len` is what keeps the task non-trivial; with the defaults about 1 in 20 random
trees is kept, nearly all of them nesting max_depth - 1 = 9 deep (as in LRA's data).
Implementation: the same process grown breadth-first for many candidate trees at once in numpy
(one level per step, candidates that can no longer fit dropped early), then values and token
positions of the kept ones computed level by level. ~7 ms per 64 × 512 batch on one CPU core.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attnjax.registry import ConfigError
from attnjax.tasks.base import ClassificationTask

PAD, DIGIT0, CLOSE = 0, 1, 15
OPS = ("[MIN", "[MAX", "[MED", "[SM")  # ids 11..14
OP0 = 11
TOKENS = ("<pad>", *(str(d) for d in range(10)), *OPS, "]")  # id -> string
MIN_KEEP_RATE = 1e-3  # settings that keep fewer random trees than this are refused
NODE_BUDGET = 1 << 22  # candidates per round <= NODE_BUDGET / seq_len (bounds memory)


def _apply(kind, args, a, starts):
    """Operator values from the children: kind [M] in 0..3, args [sum a] children's values
    grouped by parent, a [M] argument counts, starts [M] each parent's first child."""
    mins = np.minimum.reduceat(args, starts)
    maxs = np.maximum.reduceat(args, starts)
    sums = np.add.reduceat(args, starts) % 10
    seg = np.repeat(np.arange(len(a)), a)
    srt = args[np.lexsort((args, seg))]  # sorted within each parent
    meds = (srt[starts + (a - 1) // 2] + srt[starts + a // 2]) // 2  # == int(np.median(...))
    return np.choose(kind, [mins, maxs, meds, sums])


@dataclasses.dataclass(frozen=True)
class ListOps(ClassificationTask):
    """LRA ListOps. Settings below; format and generator in the module docstring."""

    length_field = "seq_len"  # eval_lengths rebuilds the task with another seq_len

    seq_len: int = 512  # L: padded input length and the longest tree kept (LRA: 2000)
    min_len: int = 128  # shortest tree kept, in tokens (LRA: 501 at seq_len 2000)
    max_depth: int = 10  # levels incl. leaves; at most max_depth - 1 nested operators (LRA: 10)
    max_args: int = 10  # arguments per operator, uniform in [2, max_args] (LRA: 10)
    op_prob: float = 0.25  # P(node above max_depth is an operator) (LRA's VALUE_P: 0.25)

    def __post_init__(self):
        problems = []
        if self.max_depth < 1:
            problems.append(f"max_depth must be >= 1 (got {self.max_depth})")
        if self.max_args < 2:
            problems.append(f"max_args must be >= 2 (got {self.max_args})")
        if not 0.0 <= self.op_prob <= 1.0:
            problems.append(f"op_prob must be in [0, 1] (got {self.op_prob})")
        if not 1 <= self.min_len <= self.seq_len:
            problems.append(
                f"need 1 <= min_len <= seq_len (got min_len={self.min_len}, "
                f"seq_len={self.seq_len})"
            )
        longest = 1  # longest tree the settings allow: max_args operators at every level
        for _ in range(max(self.max_depth - 1, 0)):
            longest = 2 + self.max_args * longest
        if self.min_len > 1 and (self.op_prob == 0 or self.max_depth == 1):
            problems.append("min_len > 1 needs op_prob > 0 and max_depth > 1 (only digits)")
        elif self.min_len > longest:
            problems.append(f"min_len={self.min_len} exceeds the longest possible tree {longest}")
        if problems:
            raise ConfigError("listops: " + "; ".join(problems))

    @property
    def vocab_size(self) -> int:
        return len(TOKENS)

    @property
    def num_classes(self) -> int:
        return 10

    @classmethod
    def chance_accuracy(cls, settings):
        """1/10: a uniform guess among the 10 results (the majority class scores more)."""
        return 0.1

    @property
    def max_length(self) -> int:
        return self.seq_len

    def _grow(self, rng: np.random.Generator, k: int):
        """Grows k candidate trees breadth-first (LRA's process, level by level).

        Returns (levels, length [k]); levels[d] = (tree, is_op, nargs, kind, digit), one entry
        per node at depth d+1, grouped by candidate `tree`, children in their parents' order.
        A candidate stops growing (and gets length seq_len + 1) once it cannot fit in seq_len,
        so at most k * seq_len nodes are ever made.
        """
        levels, length = [], np.zeros(k, np.int64)
        tree = np.arange(k)  # [N] candidate of each node at this level
        for d in range(self.max_depth):
            n = len(tree)
            if n == 0:
                break
            is_op = rng.random(n) < self.op_prob
            if d == self.max_depth - 1:
                is_op[:] = False  # depth max_depth: always a digit
            nargs = np.where(is_op, rng.integers(2, self.max_args + 1, n), 0)
            kind, digit = rng.integers(0, 4, n), rng.integers(0, 10, n)
            length += np.bincount(tree, weights=1 + is_op, minlength=k).astype(np.int64)
            levels.append((tree, is_op, nargs, kind, digit))
            # children add >= 1 token each: drop candidates that can no longer fit
            doomed = length + np.bincount(tree, weights=nargs, minlength=k) > self.seq_len
            length[doomed] = self.seq_len + 1
            tree = np.repeat(tree, nargs)
            tree = tree[~doomed[tree]]
        return levels, length

    def _build(self, levels, keep: np.ndarray, k: int):
        """Token ids [B, L] and labels [B] of the candidates `keep` (sorted, B of them)."""
        b = len(keep)
        remap = np.full(k, -1)
        remap[keep] = np.arange(b)
        sub = []
        for tree, *rest in levels:
            m = remap[tree] >= 0
            sub.append((remap[tree[m]], *(x[m] for x in rest)))
        # bottom-up: value and token count of every node
        vals, sizes = [None] * len(sub), [None] * len(sub)
        for d in reversed(range(len(sub))):
            _, is_op, nargs, kind, digit = sub[d]
            val, size = digit.copy(), np.ones(len(digit), np.int64)
            a = nargs[is_op]
            if a.size:
                starts = np.cumsum(a) - a
                val[is_op] = _apply(kind[is_op], vals[d + 1], a, starts)
                size[is_op] = 2 + np.add.reduceat(sizes[d + 1], starts)
            vals[d], sizes[d] = val, size
        # top-down: position of every node; an operator's "]" closes its span
        inputs = np.zeros((b, self.seq_len), np.int32)  # [B, L], PAD = 0
        pos = np.zeros(b, np.int64)  # roots
        for d, (tree, is_op, nargs, kind, digit) in enumerate(sub):
            leaf = ~is_op
            inputs[tree[leaf], pos[leaf]] = DIGIT0 + digit[leaf]
            inputs[tree[is_op], pos[is_op]] = OP0 + kind[is_op]
            inputs[tree[is_op], pos[is_op] + sizes[d][is_op] - 1] = CLOSE
            a = nargs[is_op]
            if a.size:
                starts, seg = np.cumsum(a) - a, np.repeat(np.arange(len(a)), a)
                before = np.cumsum(sizes[d + 1]) - sizes[d + 1]  # tokens of earlier nodes
                pos = pos[is_op][seg] + 1 + before - before[starts][seg]
        return inputs, vals[0].astype(np.int32)

    def generate(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        parts, need, tried, kept, rate = [], batch_size, 0, 0, 1 / 16
        while need > 0:
            if tried >= 100_000 and kept < MIN_KEEP_RATE * tried:
                raise RuntimeError(
                    f"listops: only {kept} of {tried} random trees had {self.min_len} <= "
                    f"length <= {self.seq_len} tokens; widen that range or change "
                    "op_prob/max_args/max_depth"
                )
            k = int(min(max(1.5 * need / rate, 64), max(NODE_BUDGET // self.seq_len, 64)))
            levels, length = self._grow(rng, k)
            ok = np.flatnonzero((length >= self.min_len) & (length <= self.seq_len))
            tried, kept = tried + k, kept + len(ok)
            rate = max(kept / tried, MIN_KEEP_RATE)
            if len(ok):
                parts.append(self._build(levels, ok[:need], k))
                need -= len(ok[:need])
        inputs = np.concatenate([p[0] for p in parts])  # [B, L]
        targets = np.concatenate([p[1] for p in parts])  # [B]
        return {"inputs": inputs, "targets": targets, "padding_mask": inputs != PAD}


TASK = ListOps
