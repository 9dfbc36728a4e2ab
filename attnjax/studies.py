"""Building blocks shared by experiment files (`experiments/*.py`), so studies don't copy them.

    lra_variants(length)  the Long Range Arena line-up of bidirectional efficient attentions,
                          sparse windows and blocks sized to the sequence length
    zoology_variants(length)  the line-up of Zoology's figure 2 (MQAR recall vs width):
                          attention and the gated-convolution / recurrent mixers
    task_overrides(task)  the overrides that put one study's runs on another task with that
                          task's own config-file settings and step budget
"""

from __future__ import annotations

import math
from typing import Any


def lra_variants(length: int) -> dict[str, dict]:
    """{variant: settings} as in LRA's table 1 (Tay et al. 2020), one or two per family.
    Windows and blocks are 1/16 of the length (at least 8), so the sparse patterns stay sparse
    at every size instead of covering the whole sequence (softmax in disguise)."""
    window = max(8, length // 16)
    return {
        "softmax": {},
        "local": {"window_size": window},
        "strided": {"stride": max(4, math.isqrt(length))},  # Sparse Transformer: stride √L
        "longformer": {"window_size": window},
        "bigbird": {"block_size": max(4, length // 32)},
        "block_local": {"block_size": window},
        "linear": {},
        "performer": {},
        "cosformer": {},
        "linformer": {"proj_dim": min(256, length // 4)},
        "nystromformer": {},
        "reformer": {},
        "sinkhorn": {"block_size": window},
        "synthesizer_random": {},
        "s4d": {},  # state-space model, bidirectional kernel pair (as LRA's S4 runs)
    }


def zoology_variants(length: int) -> dict[str, dict]:
    """{variant: settings} of Zoology's figure 2 (Arora et al. 2023, arXiv:2312.04927; its
    configs in HazyResearch/zoology, iclr24_zoology_figure2), for sequences of `length`.

    As there: h3 with head_dim 2 and state and shift sizes = the length ("mathematically
    equivalent to Hyena"), hyena and base_conv with their filters spanning the length (their
    filter_horizon 0 = the model's max_length), based with Taylor features of dimension 8 and no
    sliding window (window_size=0: Taylor linear attention alone).
    Set by the study, not here (Block options): Zoology's "attention" has 1 head and attention
    dropout 0.1, its models no MLP (model.num_heads, model.attention_dropout_rate,
    model.mlp_dim=0); experiments/zoology_fig2.py sets them.
    Differences: Zoology's based model is a hybrid whose layers alternate a BaseConv (short
    convolution of width 3, gated) and Based; every layer here is Based, and model.short_conv=3
    on q, k, v is the nearest stand-in for the short convolution. Its base_conv alternates a
    short and a long layer, which base_conv composes in each layer. Its rwkv is RWKV-4's time
    mixer (rwkv6 here). Its mamba runs in Mamba's own block (RMSNorm, mixer, add; no MLP);
    here in the common Block (LayerNorm).
    """
    return {
        "softmax": {},
        "base_conv": {},
        "hyena": {},
        "h3": {"head_dim": 2, "state_dim": length + length % 2, "shift_dim": length},
        "rwkv6": {},
        "based": {"feature_dim": 8, "window_size": 0},
        "mamba": {},
    }


def task_overrides(task: str) -> dict[str, Any]:
    """Overrides switching a run to `task` as configs/<task>.py sets it up: the whole `task`
    group replaced (no setting of the study's base task leaks in) and its num_train_steps."""
    from attnjax.config import load_config_file

    base = load_config_file(task)
    return {"task": {}, **{f"task.{k}": v for k, v in base.task.items()},
            "num_train_steps": base.num_train_steps}
