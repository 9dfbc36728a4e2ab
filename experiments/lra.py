"""Long Range Arena (Tay et al. 2020, "Long Range Arena: A Benchmark for Efficient Transformers",
arXiv:2011.04006): the efficient-attention line-up (attnjax.studies.lra_variants) against
softmax on LRA's tasks, each with LRA's own hyper-parameters (its released configs,
github.com/google-research/long-range-arena, lra_benchmarks/<task>/configs/), one model per
task shared by every variant, 3 seeds.

Run:  ./launch.sh sweep experiments/lra.py                (every task below, one sweep dir)
      ./launch.sh sweep experiments/lra.py:listops        (one task: listops, text, image,
                                                           pathfinder)
      ./launch.sh sweep experiments/lra.py:cpu            (ListOps at laptop size, below)
      ./launch.sh compare runs/lra --baseline softmax
Data: ListOps and Pathfinder are generated. Text and Image read files: set ATTNJAX_LRA_DATA to a
      folder holding aclImdb/ (configs/text_classification.py says where to get it) and
      cifar10.npz (configs/image_classification.py says how to make it).
Cost: accelerator-sized: 14 variants x 3 seeds per task; one run is ~hours on one GPU for
      ListOps (6 x 512 at length 2000) and Pathfinder (62,400 steps at batch 512), tens of
      minutes to an hour for Text and Image.

`:cpu` is ListOps at laptop size, not LRA's setting: configs/listops.py:cpu (length 32-128,
2 layers x d_model 64, 4 heads... see that file), 500 steps at batch 32, LRA table 1's line-up as
far as attnjax has it (CPU_VARIANTS: Transformer, Local, Sparse Trans. = strided, Longformer,
Linformer, Reformer, Sinkhorn, Synthesizer = synthesizer_random, BigBird, Linear Trans.,
Performer), learning rate 1e-3 or 3e-3 chosen per variant on validation accuracy, 3 seeds,
test accuracy on 512 fixed examples. Its results and what they say about table 1 are in
docs/RESULTS.md (docs/results/lra-cpu/).

LRA's settings (released configs; the per-variant config files only set model_type):

  task        layers d_model heads mlp   batch steps   lr (peak)            wd   warmup  length
  ListOps     6      512     8     2048  32    5,000   0.05*rsqrt: 1.58e-3  0.1  1,000   2,000
  Text        4      256     4     1024  32    20,000  0.05*rsqrt: 5.59e-4  0.1  8,000   1,000
  Image       1      32      1     64    256   35,000  5e-4, cosine         0.0  175     1,024
  Pathfinder  1      128     4     128   512   62,400  1e-3, cosine         0.0  312     1,024

  ListOps, Text: Adam(0.9, 0.98, eps 1e-9) with decoupled weight decay, lr = 0.05 x linear warmup
  x rsqrt decay (the peak above: 0.05 / sqrt(warmup)), dropout 0.1 and attention dropout 0.1
  (LRA's Transformer defaults), sinusoidal positions, CLS pooling. Text reads bytes; the
  released config's max_length is 1000 (the paper says 4K).
  Image (CIFAR-10 grey, 45k train images, 200 epochs): dropout 0.3, attention dropout 0.2,
  learned positions, CLS pooling, no gradient clipping.
  Pathfinder-32 (hard, 160k images, 200 epochs): qkv_dim 64 (half of d_model), dropout 0.2,
  attention dropout 0.1, sinusoidal positions, MEAN pooling, no gradient clipping.
  Each task's configs/<task>.py:lra holds these settings.

Deviations, and why:
  - Retrieval (AAN document matching, 4K x 2) is not run: attnjax has no two-document
    matching task. The table's Avg below is over LRA's five tasks; ours covers four.
  - Schedule: attnjax has one schedule, linear warmup then cosine decay to 0. For ListOps and
    Text (LRA: rsqrt decay) the peak is LRA's peak, so warmup and peak match; the decay differs.
  - Pooling: attnjax classification heads mean-pool (LRA pools a CLS token for ListOps, Text,
    Image; MEAN for Pathfinder).
  - Attention dropout is 0 for every variant (LRA: 0.1; Image 0.2): it exists only for
    variants with explicit attention weights, and every variant gets the same regularisers
    (as lra_pathfinder.py).
  - Pathfinder's q/k/v width is d_model (head dim 32); LRA's qkv_dim is half of it (head dim 16):
    the Block's projections are d_model wide.
  - Data: ListOps and Pathfinder are attnjax's generators (LRA's ListOps length 500-2000, and
    LRA's Pathfinder-32 hard level, 14 dashes), fresh examples each step instead of LRA's fixed
    released files (96k ListOps, 160k Pathfinder); Image's validation is 10% of train carved by
    hash (LRA validates on the test set); evaluation uses fixed subsets (configs'
    num_eval_batches), the test split is scored once at the end.
  - Variants: attnjax's own implementations (attnjax/attention/), sizes from lra_variants
    (windows and blocks 1/16 of the length, the Sparse Transformer's stride √L); LRA's
    "Sparse Trans." is `strided` (Child et al. 2019, the paper LRA ran); s4d, cosformer,
    nystromformer and block_local are beyond LRA's table.
  - Seeds: 3 per variant (LRA reports one run).

LRA table 1 (test accuracy %, from the paper and the repository's README; Path-X: every model
FAILs; Avg over the five tasks, as printed — Sinkhorn's printed Avg 51.29 is not the mean of
its row, 51.48):

  model            ListOps  Text   Retrieval  Image  Pathfinder  Avg
  Transformer      36.37    64.27  57.46      42.44  71.40       54.39
  Local Attention  15.82    52.98  53.39      41.46  66.63       46.06
  Sparse Trans.    17.07    63.58  59.59      44.24  71.71       51.24
  Longformer       35.63    62.85  56.89      42.22  69.71       53.46
  Linformer        35.70    53.94  52.27      38.56  76.34       51.36
  Reformer         37.27    56.10  53.40      38.07  68.50       50.67
  Sinkhorn Trans.  33.67    61.20  53.83      41.23  67.45       51.29
  Synthesizer      36.99    61.68  54.67      41.61  69.45       52.88
  BigBird          36.05    64.02  59.29      40.83  74.87       55.01
  Linear Trans.    16.13    65.90  53.09      42.34  75.30       50.55
  Performer        18.01    65.40  53.82      42.77  77.05       51.41
"""

import os
from pathlib import Path

from attnjax.config import flatten, load_config_file
from attnjax.registry import ConfigError
from attnjax.studies import lra_variants
from attnjax.sweep import run_name as overrides_name

# arg -> (configs/ file, its argument, the data file under ATTNJAX_LRA_DATA or None)
TASKS = {
    "listops": ("listops", "lra", None),
    "text": ("text_classification", "lra", "aclImdb"),
    "image": ("image_classification", "lra", "cifar10.npz"),
    "pathfinder": ("pathfinder", "lra", None),
}
CPU = {"cpu": ("listops", "cpu", None)}  # laptop-sized ListOps, not LRA's setting
CPU_VARIANTS = ("softmax", "local", "strided", "longformer", "linformer", "reformer", "sinkhorn",
                "synthesizer_random", "bigbird", "linear", "performer")
CPU_LEARNING_RATES = (1e-3, 3e-3)
SEEDS = (0, 1, 2)
DATA_ENV = "ATTNJAX_LRA_DATA"


def _task(arg):
    known = {**TASKS, **CPU}
    if arg not in known:
        raise ValueError(f"experiments/lra.py: unknown argument {arg!r}; known: "
                         f"{', '.join(known)} (or none: every LRA task)")
    return known[arg]


def _config(arg):
    name, config_arg, data = _task(arg)
    config = load_config_file(name, config_arg)
    if data is not None:
        root = os.environ.get(DATA_ENV)
        if not root:
            raise ConfigError(f"experiments/lra.py:{arg} reads {data}: set {DATA_ENV} to the "
                              f"folder holding it (see configs/{name}.py for where to get it)")
        config.task.path = str(Path(root).expanduser() / data)
    # dropout on attention weights exists only for variants with explicit weights: off for all,
    # so every variant gets the same regularisers
    config.model.attention_dropout_rate = 0.0
    if arg == "cpu":  # larger fixed validation and test sets: tighter intervals
        config.num_eval_batches = 8
        config.num_test_batches = 16
    return config


def get_config(arg=None):
    return _config(arg or "listops")


def sweep(arg=None):
    if arg == "cpu":
        variants = lra_variants(_length(get_config(arg)))
        return [{"model.attention": name, "model.attention_kwargs": variants[name],
                 "learning_rate": lr, "seed": seed}
                for name in CPU_VARIANTS for lr in CPU_LEARNING_RATES for seed in SEEDS]
    base = flatten(get_config(arg).to_dict())
    runs = []
    for task in [arg] if arg else list(TASKS):
        config = _config(task)
        # the keys where this task's LRA setting differs from the base config (none when one
        # task is planned); the whole task group is replaced so no setting leaks across tasks
        changed = {k: v for k, v in flatten(config.to_dict()).items()
                   if not k.startswith("task.") and base.get(k) != v}
        task_keys = {"task": {}, **{f"task.{k}": v for k, v in config.task.items()}}
        overrides = {**(task_keys if arg is None else {}), **changed}
        length = _length(config)
        runs += [{**overrides, "model.attention": name, "model.attention_kwargs": kwargs,
                  "seed": seed}
                 for name, kwargs in lra_variants(length).items() for seed in SEEDS]
    return runs


def compare(arg=None):
    """How `attnjax compare` reads this study: against softmax; `:cpu` selects the learning
    rate per variant on validation accuracy and reports test accuracy."""
    if arg == "cpu":
        return {"metric": ["test/accuracy"], "select_by": "eval/accuracy",
                "over": ["learning_rate"], "baseline": "softmax"}
    return {"baseline": "softmax"}


def run_name(overrides):
    """'listops_attention-local_window_size-125_seed-0' with every task, else the variant and
    seed alone ('attention-local_window_size-125_seed-0', as any study names them): the task's
    LRA settings are many keys, which the default name would spell out."""
    task = overrides.get("task.name")
    swept = ("seed", "model.attention") + (() if task else ("learning_rate",))  # :cpu's lrs
    variant = {k: v for k, v in overrides.items()
               if k in swept or k.startswith("model.attention_kwargs")}
    name = overrides_name(variant, list(variant))
    label = {config_name: arg for arg, (config_name, _, _) in TASKS.items()}.get(task, task)
    return f"{label}_{name}" if task else name


def _length(config) -> int:
    task = config.task
    if "image_size" in task:  # pathfinder
        return task.image_size ** 2
    return task.get("seq_len", 32 * 32)  # image: CIFAR-10, 32 x 32 pixels
