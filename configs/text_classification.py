"""LRA "Text" (Tay et al. 2020): IMDb sentiment from raw bytes with a bidirectional encoder.

Data: download aclImdb_v1.tar.gz (https://ai.stanford.edu/~amaas/data/sentiment/, 80 MB) and
      unpack it; task.path is the aclImdb/ folder (train/{neg,pos}, test/{neg,pos}; train/unsup
      is ignored). Eval is 10% of train/ (carved by hash), test the 25k test/ reviews.
Run:  ./launch.sh run configs/text_classification.py --config.task.path=/data/aclImdb
      ./launch.sh run configs/text_classification.py:cpu --config.task.path=/data/aclImdb
      ./launch.sh run configs/text_classification.py:lra --config.task.path=/data/aclImdb
      (`:lra`: LRA's released text config, lra_benchmarks/text_classification/configs/
      base_tc_config.py: 4 x 256, 4 heads, MLP 1024, length 1000, 20k steps at batch 32)
      (any CSV/JSONL with text,label columns works too: see attnjax/tasks/text_classification.py)
Cost: 10k steps of 32 x 1024 bytes — accelerator-sized (tens of minutes on one GPU with softmax
      attention); LRA's own length is --config.task.seq_len=4000 (about 4x the tokens, and 16x
      the attention cost for softmax). The final test pass reads all 25k test reviews. Reading
      aclImdb's 50k files takes a few seconds at the start.
"""

from attnjax.config import defaults


def get_config(arg=None):
    config = defaults()
    config.num_train_steps = 10_000
    config.batch_size = 32
    config.learning_rate = 1e-3
    config.warmup_steps = 500
    config.weight_decay = 0.1
    config.eval_every_steps = 1000
    config.num_eval_batches = 20  # 640 of the ~2.5k carved eval reviews, the same every run
    config.num_test_batches = 782  # all 25,000 test reviews (the last batch wraps around 24)
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000

    config.model.num_layers = 4
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.mlp_dim = 512
    config.model.positional = "learned"

    config.task.name = "text_classification"
    config.task.path = ""  # required: --config.task.path=/data/aclImdb
    config.task.seq_len = 1024
    if arg == "cpu":  # a laptop-sized smoke run of the same study
        config.num_train_steps = 300
        config.warmup_steps = 30
        config.eval_every_steps = 100
        config.num_test_batches = 10
        config.checkpoint_every_steps = 150
        config.model.num_layers = 2
        config.model.d_model = 64
        config.model.num_heads = 2
        config.model.mlp_dim = 128
        config.task.seq_len = 256
    elif arg == "lra":  # LRA's released text config (see experiments/lra.py for deviations)
        config.num_train_steps = 20_000
        config.warmup_steps = 8000
        # LRA: 0.05 * linear warmup * rsqrt decay, peaking at 0.05 / sqrt(8000) after warmup
        config.learning_rate = 0.05 / 8000**0.5
        config.model.num_layers = 4
        config.model.d_model = 256
        config.model.num_heads = 4
        config.model.mlp_dim = 1024
        config.model.dropout_rate = 0.1  # LRA's attention dropout 0.1: see configs/listops.py
        config.model.positional = "sinusoidal"  # LRA: learn_pos_emb=False
        config.task.seq_len = 1000  # the released config's max_length (the paper says 4K)
    elif arg is not None:
        raise ValueError(f"configs/text_classification.py: unknown argument {arg!r}; "
                         "known: cpu, lra")
    return config
