"""Zoology-style MQAR sweep (Arora et al. 2023, figure 2): recall accuracy vs model width, one
panel per sequence length, for softmax attention and fixed-state mixers. The number of kv pairs
grows with the length (L/4 here), so longer sequences need more recall capacity; a
fixed-state mixer needs a wider model (a larger state) to keep up, softmax does not.
This is the older, looser study (an infinite stream, an MLP, other variants);
experiments/zoology_fig2.py is the figure's exact setting and lists its deviations.

Learning rates are swept too, as in Zoology; pick the best per variant on validation data and
report the held-out test split:
      ./launch.sh compare runs/zoology_mqar-cpu --select-by eval/accuracy --over learning_rate \\
          --x model.d_model --by task.seq_len
Run:  ./launch.sh sweep experiments/zoology_mqar.py:cpu   (L 32/64, d 32/64, 2 lrs, 1 seed)
      ./launch.sh sweep experiments/zoology_mqar.py       (L 64-512, d 64-512, 3 lrs, 2 seeds)
Cost: `:cpu` 32 runs x ~1 min on 2 CPU cores (about 30 minutes); the full sweep is 288 runs,
minutes each on one GPU.
"""

from attnjax.config import load_config_file

VARIANTS = {"softmax": {}, "based": {}, "linear": {}, "retention": {}}
SIZES = {  # arg -> (seq_lens, d_models, learning rates, seeds, steps)
    None: ((64, 128, 256, 512), (64, 128, 256), (1e-3, 3e-3, 1e-2), (0, 1), 4000),
    "cpu": ((32, 64), (32, 64), (1e-3, 3e-3), (0,), 800),
}


def _size(arg):
    if arg not in SIZES:
        raise ValueError(f"unknown argument {arg!r}; known: cpu (or none)")
    return SIZES[arg]


def get_config(arg=None):
    *_, steps = _size(arg)
    config = load_config_file("mqar")
    config.num_train_steps = steps
    config.task.vocab_size = 8192 if arg is None else 256
    config.model.positional = "sinusoidal"  # any length, no learned table per size
    return config


def sweep(arg=None):
    lengths, widths, lrs, seeds, _ = _size(arg)
    return [
        {"model.attention": name, "model.attention_kwargs": kwargs, "task.seq_len": length,
         "task.num_kv_pairs": length // 4 if arg is None else length // 8,
         "model.d_model": width, "model.mlp_dim": 2 * width, "learning_rate": lr, "seed": seed}
        for name, kwargs in VARIANTS.items()
        for length in lengths
        for width in widths
        for lr in lrs
        for seed in seeds
    ]
