"""LRA "Image" (Tay et al. 2020): grayscale CIFAR-10 as a sequence of 1024 pixels (sCIFAR
style), classified by a bidirectional encoder.

Data: download CIFAR-10's python version (https://www.cs.toronto.edu/~kriz/cifar.html,
      cifar-10-python.tar.gz, 163 MB), unpack it and make an .npz with numpy:

        import pickle, numpy as np
        def load(name):
            with open(f"cifar-10-batches-py/{name}", "rb") as f:
                d = pickle.load(f, encoding="bytes")
            x = d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # [N, 32, 32, 3]
            return x, np.array(d[b"labels"])
        train = [load(f"data_batch_{i}") for i in range(1, 6)]
        x_test, y_test = load("test_batch")
        np.savez("/data/cifar10.npz", x_train=np.concatenate([x for x, _ in train]),
                 y_train=np.concatenate([y for _, y in train]), x_test=x_test, y_test=y_test)

      The task converts RGB to grayscale (BT.601 luma); eval is 10% of train (carved by hash),
      test the 10k test images.
Run:  ./launch.sh run configs/image_classification.py --config.task.path=/data/cifar10.npz
      ./launch.sh run configs/image_classification.py:cpu --config.task.path=/data/cifar10.npz
      ./launch.sh run configs/image_classification.py:lra --config.task.path=/data/cifar10.npz
      (`:lra`: LRA's released config, lra_benchmarks/image/configs/cifar10/
      base_cifar10_config.py: 1 x 32, 1 head, MLP 64, 200 epochs at batch 256)
Cost: 10k steps of 64 x 1024 pixels (~14 epochs of 45k images) — accelerator-sized (tens of
      minutes on one GPU with softmax attention). Loading the npz takes about a second.
"""

from attnjax.config import defaults


def get_config(arg=None):
    config = defaults()
    config.num_train_steps = 10_000
    config.batch_size = 64
    config.learning_rate = 1e-3
    config.warmup_steps = 500
    config.weight_decay = 0.1
    config.eval_every_steps = 1000
    config.num_eval_batches = 20  # 1280 of the ~5k carved eval images, the same every run
    config.num_test_batches = 157  # all 10,000 test images (the last batch wraps around 48)
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000

    config.model.num_layers = 4
    config.model.d_model = 128
    config.model.num_heads = 4
    config.model.mlp_dim = 256
    config.model.positional = "learned"

    config.task.name = "image_classification"
    config.task.path = ""  # required: --config.task.path=/data/cifar10.npz
    if arg == "cpu":  # a laptop-sized smoke run of the same study
        config.num_train_steps = 300
        config.warmup_steps = 30
        config.eval_every_steps = 100
        config.num_eval_batches = 4
        config.num_test_batches = 4
        config.checkpoint_every_steps = 150
        config.model.num_layers = 1
        config.model.d_model = 64
        config.model.num_heads = 2
        config.model.mlp_dim = 128
    elif arg == "lra":  # LRA's released cifar10 config (see experiments/lra.py for deviations)
        epoch = 45_000 // 256  # LRA: 45k train images, batch 256
        config.batch_size = 256
        config.num_train_steps = 200 * epoch
        config.warmup_steps = epoch
        config.learning_rate = 5e-4  # LRA: linear warmup, cosine decay
        config.weight_decay = 0.0
        config.grad_clip_norm = 0.0  # LRA: grad_clip_norm=None
        config.eval_every_steps = 10 * epoch
        config.checkpoint_every_steps = 10 * epoch
        config.num_eval_batches = 5  # 1280 images, as the default
        config.num_test_batches = 40  # all 10,000 test images (the last batch wraps around)
        config.model.num_layers = 1
        config.model.d_model = 32
        config.model.num_heads = 1
        config.model.mlp_dim = 64
        config.model.dropout_rate = 0.3  # LRA's attention dropout 0.2: see configs/listops.py
        config.model.positional = "learned"  # LRA: learn_pos_emb=True
    elif arg is not None:
        raise ValueError(f"configs/image_classification.py: unknown argument {arg!r}; "
                         "known: cpu, lra")
    return config
