"""LRA ListOps (Nangia & Bowman 2018; Tay et al. 2020): 10-way classification of nested
MIN/MAX/MED/SM expressions, with a bidirectional Transformer encoder and mean pooling.

Run:  ./launch.sh run configs/listops.py --config.model.attention=linear
      ./launch.sh run configs/listops.py:cpu      (a short CPU-sized run, a few minutes)
      ./launch.sh run configs/listops.py:lra      (LRA's setting: length 501-2000, 6 x 512)
Cost: the default (length <= 512, 5k steps) is accelerator-sized (~10 min on one GPU); `:lra`
      is hours on one GPU; `:cpu` about 5 minutes on 2 CPU cores.
"""

from attnjax.config import defaults


def get_config(arg=None):
    config = defaults()
    config.num_train_steps = 5000
    config.batch_size = 32
    config.learning_rate = 1e-3
    config.warmup_steps = 500
    config.weight_decay = 0.1
    config.eval_every_steps = 500
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000

    config.model.num_layers = 4
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.mlp_dim = 512
    config.model.positional = "learned"

    config.task.name = "listops"
    config.task.seq_len = 512
    config.task.min_len = 128
    if arg == "cpu":  # a laptop-sized smoke run of the same study
        config.num_train_steps = 500
        config.warmup_steps = 50
        config.eval_every_steps = 100
        config.checkpoint_every_steps = 250
        config.model.num_layers = 2
        config.model.d_model = 64
        config.model.num_heads = 2
        config.model.mlp_dim = 128
        config.task.seq_len = 128
        config.task.min_len = 32
    elif arg == "lra":  # LRA's ListOps setting (Tay et al. 2020, their listops config)
        config.model.num_layers = 6
        config.model.d_model = 512
        config.model.num_heads = 8
        config.model.mlp_dim = 2048
        # LRA's Transformer default; its attention dropout (0.1) is left out: only variants
        # with explicit attention weights have one, and every variant runs this config
        config.model.dropout_rate = 0.1
        config.model.positional = "sinusoidal"  # LRA: learn_pos_emb=False
        # LRA: 0.05 * linear warmup * rsqrt decay, peaking at 0.05 / sqrt(1000) after warmup
        config.learning_rate = 0.05 / 1000**0.5
        config.warmup_steps = 1000
        config.task.seq_len = 2000
        config.task.min_len = 501
    elif arg is not None:
        raise ValueError(f"configs/listops.py: unknown argument {arg!r}; known: cpu, lra")
    return config
