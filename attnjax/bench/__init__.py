"""Benchmarks (never timed unit tests): `attnjax bench KIND [options]`.

    attnjax bench attention [...]   forward+backward time and peak memory per variant and length
                                    -> <out>/benchmark.json (compare plots it vs sequence length)
    attnjax bench data [...]        host batch rate of every task vs the train step's rate
    attnjax bench workers [...]     a study's wall time with 1 vs N local worker processes
    attnjax bench replicas [...]    K runs packed in one program vs one by one (run-steps/s)
    attnjax bench train [...]       a GPT-style LM's train step: tokens/s, TFLOP/s, MFU, memory,
                                    compile time -> <out>/train_benchmark.json

Each writes a JSON with the device, date, versions and the command that produced it, so a
figure in BENCHMARKS.md can be traced to its run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from attnjax.registry import ConfigError, unknown_name_message

KINDS = ("attention", "data", "workers", "replicas", "train")


def parse_sets(items: Sequence[str]) -> dict:
    """`--set KEY=VALUE` arguments as config overrides (values read as Python literals when
    they are one: 128, True, 1e-3, (64, 128); else as text)."""
    import ast

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    if kind not in KINDS:
        raise ConfigError(unknown_name_message("benchmark:", kind, list(KINDS)))
    return importlib.import_module(f"attnjax.bench.{kind}").main(rest)
