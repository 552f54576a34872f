"""A stage's start-up: the seconds before its first training step, by part.

The demo's stages run for minutes each, so what a stage spends before it trains is their budget too (the
`goodput/init` and `goodput/compile` shares of `metrics.jsonl`). This times, in one process, what `train`
does before its loop: building the programs (tracing the model's shapes), opening the input pipeline, the
fresh state (the init program's compile and run, and the earlier stages' weights for a stage that builds on
them), and the first step (its compile).

    python experiments/bench_startup.py --config experiments/demo/flow_matching.py \
        --config.data.data_dir=D --config.pretrained.ar_workdir=W/ar --config.pretrained.flow_vae_workdir=W/flow_vae
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if "--config" not in argv:
        raise SystemExit(__doc__)
    at = argv.index("--config")
    config_file, overrides = argv[at + 1], argv[:at] + argv[at + 2:]

    import jax

    from speech_jax import sharding
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train.loop import Trainer

    config = apply_overrides(load_config(config_file), overrides)
    seconds = {}
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        seconds["programs"], t = time.perf_counter() - t, time.perf_counter()
        batches = trainer.data_iterator(config.data.train_split, training=True)
        batch = next(batches)
        seconds["first_batch"], t = time.perf_counter() - t, time.perf_counter()
        state = jax.block_until_ready(trainer.initial_state())
        seconds["initial_state"], t = time.perf_counter() - t, time.perf_counter()
        with sharding.activation_rules(trainer.mesh, trainer.rules):
            state, metrics = trainer.step(state, batch, 0)
        jax.block_until_ready(metrics)
        seconds["first_step"] = time.perf_counter() - t
    seconds["total"] = sum(seconds.values())
    out = {"stage": config.stage, "seconds": {k: round(v, 1) for k, v in seconds.items()},
           "devices": jax.device_count()}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
