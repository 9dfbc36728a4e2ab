"""enwik8 byte-level language modelling (as in Al-Rfou et al. 2018, Transformer-XL), scored in
bits per byte, with a causal Transformer.

Data: download http://mattmahoney.net/dc/enwik8.zip (36 MB) and unzip it; task.path is the
      100 MB file `enwik8`. Standard split: first 90M bytes train, next 5M eval, last 5M test.
Run:  ./launch.sh run configs/bytes_lm.py --config.task.path=/data/enwik8
      ./launch.sh run configs/bytes_lm.py:cpu --config.task.path=/data/enwik8
      (any text file works: its bytes are the tokens)
      ./launch.sh run configs/bytes_lm.py:cpu --config.task.source=synthetic   (no file: a
      generated stand-in stream, for smoke runs; `./launch.sh bench train` uses it)
Cost: 20k steps of 32 x 512 bytes (330M bytes, ~3.6 epochs of train) — accelerator-sized (an
      hour or more on one GPU at this size). The final test pass reads the whole 5M-byte test
      split (305 batches). The file is memory-mapped: no loading time.
"""

from attnjax.config import defaults


def get_config(arg=None):
    config = defaults()
    config.num_train_steps = 20_000
    config.batch_size = 32
    config.learning_rate = 6e-4
    config.warmup_steps = 1000
    config.weight_decay = 0.1
    config.eval_every_steps = 1000
    config.num_eval_batches = 50  # 800k bytes of the 5M eval split, the same every run
    config.num_test_batches = 305  # the whole 5M-byte test split (9765 windows of 512)
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000

    config.model.num_layers = 6
    config.model.d_model = 256
    config.model.num_heads = 4
    config.model.mlp_dim = 1024
    config.model.positional = "learned"

    config.task.name = "bytes_lm"
    config.task.path = ""  # required: --config.task.path=/data/enwik8
    config.task.seq_len = 512
    if arg == "cpu":  # a laptop-sized smoke run of the same study
        config.num_train_steps = 300
        config.warmup_steps = 30
        config.eval_every_steps = 100
        config.num_eval_batches = 4
        config.num_test_batches = 4
        config.checkpoint_every_steps = 150
        config.model.num_layers = 2
        config.model.d_model = 64
        config.model.num_heads = 2
        config.model.mlp_dim = 256
        config.task.seq_len = 128
    elif arg is not None:
        raise ValueError(f"configs/bytes_lm.py: unknown argument {arg!r}; known: cpu")
    return config
