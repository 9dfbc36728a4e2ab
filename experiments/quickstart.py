"""Quickstart: softmax vs linear vs local attention on multi-query associative recall (MQAR).

The question (Zoology, Arora et al. 2023): can a mixer recall many key→value bindings in
context? Softmax attention can look every key up; linear attention must squeeze them into a
fixed-size state; local attention only sees the last `window_size` tokens, so it can answer
only queries whose key is near.

Run:  ./launch.sh            (or ./launch.sh sweep experiments/quickstart.py)
Cost: 3 variants x 2 seeds, a few minutes on 2 CPU cores; results in runs/quickstart/.
"""

from attnjax.config import load_config_file

VARIANTS = {
    "softmax": {},
    "linear": {},
    "local": {"window_size": 4},
}
SEEDS = (0, 1)


def get_config():
    return load_config_file("mqar", "quickstart")  # L=32, 4 kv pairs, 800 steps


def sweep():
    return [
        {"model.attention": name, "model.attention_kwargs": kwargs, "seed": seed}
        for name, kwargs in VARIANTS.items()
        for seed in SEEDS
    ]
