"""XLA's compiled train-step memory (arguments + temporaries) of a config at several
grad_accum_steps, compile only (nothing is trained): does an LRA-sized step fit this host?

    python scripts/step_memory.py listops:lra pathfinder:lra [--accum 1,4,8]

Prints one line per (config, M). BENCHMARKS.md ("LRA-sized steps on a 24 GiB CPU host").
"""

from __future__ import annotations

import argparse

from attnjax import config as config_lib
from attnjax import steps
from attnjax.input_pipeline import DataSource
from attnjax.parallel import replicate, shard


def step_bytes(name: str, arg: str | None, accum: int) -> int:
    config = config_lib.resolve(config_lib.apply_overrides(
        config_lib.load_config_file(name, arg),
        {"grad_accum_steps": accum, "num_devices": 1, "data_workers": 0, "data_cache": False}))
    task, _, model, devices, tx, p_train = steps.setup(config)
    batch = DataSource(task, "train", config.batch_size, config.seed).host_batch(0)
    state = replicate(steps.stack([steps.init_state(config, model, tx, batch)]), devices)
    device_batch = shard({k: v[:, None] for k, v in batch.items()}, devices)  # a pack of one
    compiled = p_train.lower(state, device_batch, steps.pack_hparams([config]),
                             steps.pack_rngs([config])).compile()
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="config[:arg], e.g. listops:lra")
    parser.add_argument("--accum", default="1,4,8", help="grad_accum_steps values")
    args = parser.parse_args()
    for spec in args.configs:
        name, _, arg = spec.partition(":")
        for accum in (int(a) for a in args.accum.split(",")):
            gib = step_bytes(name, arg or None, accum) / 2**30
            print(f"{spec} grad_accum_steps={accum}: {gib:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
