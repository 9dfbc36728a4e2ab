"""The whole zoo on MQAR: every variant with a causal mode, the quickstart's task and model.

Which token mixers can do in-context recall at all, at equal model size and training budget?
The variants' own defaults are used (windows, chunks, features); edit VARIANT_SETTINGS to study
one more closely. Mixer-level baselines (identity, gru, lstm, mlp_mixer) run in the same Block.

Run:  ./launch.sh sweep experiments/zoo_mqar.py
Cost: ~33 variants x 2 seeds x ~40 s on 2 CPU cores (about 45 minutes); minutes on a GPU.
"""

from attnjax import attention
from attnjax.config import load_config_file

SEEDS = (0, 1)
VARIANT_SETTINGS = {"local": {"window_size": 4}}  # as in the quickstart


def get_config():
    return load_config_file("mqar", "quickstart")  # L=32, 4 kv pairs, 800 steps


def sweep():
    causal = [n for n in attention.names() if attention.get(n).capabilities.causal]
    return [
        {"model.attention": name, "model.attention_kwargs": VARIANT_SETTINGS.get(name, {}),
         "seed": seed}
        for name in causal
        for seed in SEEDS
    ]
