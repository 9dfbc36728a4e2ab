"""Zoology's figure 2 (Arora, Eyuboglu et al. 2023, "Zoology: Measuring and Improving Recall in
Efficient Language Models", arXiv:2312.04927): MQAR accuracy vs model width, one panel per
sequence length, for attention and six gated-convolution / recurrent mixers.

The paper's setting, from its code (HazyResearch/zoology,
zoology/experiments/paper_configs/iclr24_zoology_figure2/configs.py, TrainConfig/ModelConfig
defaults in zoology/config.py, the loop in zoology/train.py, MQAR in
zoology/data/multiquery_ar.py), all kept here unless listed under deviations:
  data    MQAR, vocab 8192, (seq_len, kv pairs) = (64, 4), (128, 8), (256, 16); power_a 0.01,
          filler 0 (random_non_queries=False); a fixed set of 100,000 train examples
          (train_examples) and 3,000 test examples; batch 512 (256 at L=256); 64 epochs
  model   2 layers, 1 head, no MLP (state mixer Identity: model.mlp_dim=0), d_model 64, 128,
          256, 512; learned positions for attention only (max_position_embeddings = L for it,
          0 for the others); attention dropout 0.1 (MHA), residual dropout 0
  mixers  attention, base_conv, hyena, h3, rwkv, based (Taylor features of dimension 8, no
          sliding window), mamba: studies.zoology_variants
  optim   AdamW, lr in logspace(-4, -2, 4), weight decay 0.1, betas (0.9, 0.999), eps 1e-8, no
          warmup, cosine to 0 over the epochs, no gradient clipping; float32
  report  per mixer and width, the best of the four learning rates (its plot.py)
Deviations, each with its reason:
  - rwkv is rwkv6 here (RWKV-6's time mixer; Zoology's is RWKV-4's): attnjax has rwkv6 only.
  - based: Zoology's based model alternates layers, a gated BaseConv (short conv of width 3)
    then Based; here both layers are Based with model.short_conv=3 on q, k, v (a Block option
    is the same in every layer; the short conv gives Based the token shift the BaseConv layer
    gives it there). base_conv composes its short and long convolutions in each layer where
    Zoology alternates them. mamba runs in the common pre-LayerNorm Block, not Mamba's own
    (RMSNorm) block.
  - Zoology's Identity state mixer still adds LayerNorm(x) to the residual stream (its Block
    normalises before the state mixer and adds the result); model.mlp_dim=0 drops the
    sublayer and its norm: the paper's "no MLP", not that artefact of the code.
  - dropout: Zoology drops the embeddings at 0.1 (embed_dropout) and nothing else but MHA's
    attention weights; attnjax has one rate for embeddings and residuals, so embedding
    dropout is 0 here (model.dropout_rate=0).
  - early stopping: Zoology stops a run once its test accuracy passes 0.99 at an epoch end;
    attnjax has no early stopping (a pack of runs would need per-member stops), so every run
    trains all its epochs. Runs that reach 0.99 rarely lose it at a decaying learning rate;
    the cost is compute, not the figure's numbers.
  - selection: Zoology picks the learning rate on the same test set it reports; here it is
    picked on a validation set ("eval") and the test set is reported apart. Each holds
    3,072 examples (whole batches: 6 of 512, 12 of 256), not 3,000; both are drawn apart from
    the train pool (tasks/_epochs.py).
  - order: Zoology reads the train set in one fixed order every epoch (shuffle=False) and ends
    each epoch with a partial batch (196 steps of 512 per epoch); here every epoch is a new
    permutation and batches run across epoch ends: num_train_steps = epochs · 100,000 / B
    (12,500 at B=512, 25,000 at 256), and the cosine decays per step, not per epoch.
  - model details: attnjax's LM head is its own matrix (Zoology ties it to the embeddings),
    its init is flax's (Zoology: normal(0.02), out projections scaled by 1/√(2·layers)), and
    weight decay skips biases and norms (torch's AdamW decays every parameter).
Arguments:
  (none)     the figure: 3 panels x 4 widths x 4 lrs x 7 mixers x 1 seed = 336 runs
  gpu_panel  the L=64 panel (112 runs) at 8 epochs instead of 64, to finish in under 8 minutes
             on one H200 (an estimate, not measured: at L=64 the steps are latency-bound — the
             largest, d=512 softmax, is ~0.5 GFLOP — so 28 programs (4 lrs packed in each) x
             (~10 s compile + 1,563 steps x ~3 ms) ≈ 6.5 minutes)
  cpu        the L=64 panel on 2 CPU cores in under an hour (shipped: docs/results/
             zoology_fig2-cpu, docs/RESULTS.md): 5 mixers x widths 32, 64 x Zoology's two
             largest learning rates (2.15e-3, 1e-2) x 3 seeds = 60 runs of 800 steps
             (2 epochs of a 25,600-example pool, batch 64), 512 validation and 512 test
             examples. Deviations from the figure beyond the size, and why:
             - vocab 64 (not 8192): the [d, 8192] LM head alone would cost ~0.3 s per step
               on this CPU; 64 keeps 4 distinct keys and values per example easy to draw;
             - 50 warmup steps and gradient clipping at 1 (Zoology: neither): measured, with
               Zoology's optimizer softmax stays at the 0.26 plateau for all 800 steps at
               lr 1e-2, with these it reaches 0.999 by step 700 (it needs Zoology's 12,500
               steps otherwise); every mixer gets the same optimizer;
             - attention's positions are sinusoidal (Zoology: a learned table), chosen with
               the fix above (the learned table with warmup was not tried separately);
             - rwkv6 and mamba are left out: measured at this size, 592 and ~850-1,240 ms per
               step against softmax's 66 (their scans are slow on XLA:CPU), hours for their
               24 runs; the GPU runs of the figure have them.
Select and report:
      ./launch.sh compare runs/zoology_fig2   (the study's compare() settings: learning rate
          selected per mixer and width on validation, test accuracy vs d_model per seq_len)
Run:  ./launch.sh sweep experiments/zoology_fig2.py            (the figure, GPUs)
      ./launch.sh sweep experiments/zoology_fig2.py:gpu_panel  (L=64 only, 8 epochs)
      ./launch.sh sweep experiments/zoology_fig2.py:cpu        (the CPU panel, < 1 hour)
Cost: the figure is 336 runs of 12,500-25,000 steps, hours on one GPU; gpu_panel < 8 minutes
on one H200 (estimated); cpu: 60 runs, wall time in docs/RESULTS.md.
Measured at the cpu size, d=64 (2 CPU cores shared with other jobs, ms per step after compile;
compile s): softmax 81 (4), base_conv 46 (5), hyena 102 (6), h3 283 (4), rwkv6 317 (10),
based 227 (6), mamba 2,230 (14).
"""

import numpy as np

from attnjax.config import load_config_file
from attnjax.studies import zoology_variants

# mixer name in Zoology's figure -> variant here (the settings: studies.zoology_variants)
MIXERS = {"attention": "softmax", "base_conv": "base_conv", "hyena": "hyena", "h3": "h3",
          "rwkv": "rwkv6", "based": "based", "mamba": "mamba"}
FIGURE = dict(panels=((64, 4), (128, 8), (256, 16)), widths=(64, 128, 256, 512),
              learning_rates=tuple(float(x) for x in np.logspace(-4, -2, 4)), seeds=(0,),
              epochs=64, train_examples=100_000, test_examples=3_000, vocab_size=8192,
              batch_size=None)  # None: Zoology's rule, 512 (256 at L >= 256)
SIZES = {
    None: FIGURE,
    "gpu_panel": {**FIGURE, "panels": ((64, 4),), "epochs": 8},
    # the first panel on 2 CPU cores (docstring: what it keeps, what it changes and why)
    "cpu": {**FIGURE, "panels": ((64, 4),), "widths": (32, 64),
            "learning_rates": FIGURE["learning_rates"][-2:], "seeds": (0, 1, 2), "epochs": 2,
            "train_examples": 25_600, "test_examples": 512, "vocab_size": 64, "batch_size": 64,
            "mixers": ("attention", "base_conv", "hyena", "h3", "based"), "eval_every": 100,
            "warmup_steps": 50, "grad_clip_norm": 1.0, "attention_positional": "sinusoidal"},
}


def _size(arg):
    if arg not in SIZES:
        known = ", ".join(a for a in SIZES if a)
        raise ValueError(f"unknown argument {arg!r}; known: {known} (or none: the figure)")
    return SIZES[arg]


def _batch_size(size, seq_len: int) -> int:
    return size["batch_size"] or (256 if seq_len >= 256 else 512)


def _schedule(size, batch: int) -> dict:
    """The keys that follow from the batch size: epochs of the pool, whole held-out batches."""
    held_out = -(-size["test_examples"] // batch)  # whole batches covering the test set
    steps = size["epochs"] * size["train_examples"] // batch
    return {"batch_size": batch, "num_train_steps": steps, "num_eval_batches": held_out,
            "num_test_batches": held_out}


def get_config(arg=None):
    size = _size(arg)
    config = load_config_file("mqar")
    # the first panel's batch size; sweep() overrides it (and what follows) where it differs
    for key, value in _schedule(size, _batch_size(size, size["panels"][0][0])).items():
        config[key] = value
    epoch_steps = max(1, size["train_examples"] // config.batch_size)
    # Zoology tests after every epoch (twice at B=256)
    config.eval_every_steps = size.get("eval_every", epoch_steps)
    config.log_every_steps = max(1, epoch_steps // 4)
    config.checkpoint_every_steps = 8 * epoch_steps
    config.warmup_steps = size.get("warmup_steps", 0)
    config.weight_decay = 0.1
    config.adam_b1, config.adam_b2, config.adam_eps = 0.9, 0.999, 1e-8
    config.grad_clip_norm = size.get("grad_clip_norm", 0.0)
    config.train_examples = size["train_examples"]
    config.model.num_layers = 2
    config.model.num_heads = 1
    config.model.mlp_dim = 0
    config.model.dropout_rate = 0.0
    config.model.positional = "none"  # attention's learned table is set per run in sweep()
    config.model.dtype = "float32"
    config.task.vocab_size = size["vocab_size"]
    config.task.power_a = 0.01
    config.task.filler = "zero"
    return config


def _run(size, mixer: str, seq_len: int, kv_pairs: int, width: int, lr: float, seed: int):
    name = MIXERS[mixer]
    run = {"model.attention": name, "model.attention_kwargs": zoology_variants(seq_len)[name],
           "task.seq_len": seq_len, "task.num_kv_pairs": kv_pairs, "model.d_model": width,
           "learning_rate": lr, "seed": seed}
    batch, first = (_batch_size(size, length) for length in (seq_len, size["panels"][0][0]))
    if batch != first:  # only where it differs, so that run names stay short
        run.update(_schedule(size, batch))
    if mixer == "attention":  # MHA: learned positions (max_position_embeddings = L), dropout
        run.update({"model.positional": size.get("attention_positional", "learned"),
                    "model.attention_dropout_rate": 0.1})
    if mixer == "based":  # the short convolution of Zoology's BaseConv layer (docstring)
        run["model.short_conv"] = 3
    return run


def sweep(arg=None):
    size = _size(arg)
    return [
        _run(size, mixer, seq_len, kv_pairs, width, lr, seed)
        for seq_len, kv_pairs in size["panels"]
        for width in size["widths"]
        for lr in size["learning_rates"]
        for mixer in size.get("mixers", MIXERS)
        for seed in size["seeds"]
    ]


def compare(arg=None):
    """How `attnjax compare` reads the study: Zoology's plot.py takes the best learning rate per
    mixer and width — here chosen on validation accuracy, test accuracy reported — and draws
    accuracy vs width, one panel per sequence length."""
    return {"metric": ["test/accuracy"], "select_by": "eval/accuracy", "over": ["learning_rate"],
            "x": "model.d_model", "by": "task.seq_len", "baseline": "softmax"}
