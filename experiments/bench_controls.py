"""Step time and goodput of the training loop under variants of the large-run controls, each a fresh run
of `train()` (the real loop: logging, checkpoints, goodput) on the same config.

    python experiments/bench_controls.py --config experiments/judge/tiny.py --data-dir data --steps 60 \
        --variant behind_off=--config.train.metrics_one_behind=False \
        --variant accum2=--config.train.grad_accum_steps=2 [--config.k=v ...]

Prints one JSON line a variant (the first is the config as given): the median step time over the logged
steps after the first quarter, and the last row's goodput shares.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from speech_jax.config import apply_overrides, load_config  # noqa: E402
from speech_jax.train.loop import train  # noqa: E402
from speech_jax.train.metrics import read_metrics  # noqa: E402


def run(config, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        train(config, workdir)
        rows = [r for r in read_metrics(workdir) if "loss" in r]
    times = [r["step_time"] for r in rows[len(rows) // 4:] if "step_time" in r]
    return {"steps": steps, "median_step_time": float(np.median(times)),
            **{k: round(v, 4) for k, v in rows[-1].items() if k.startswith("goodput/")}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--variant", action="append", default=[], help="name=--config.k=v[,--config.k=v]")
    args, overrides = ap.parse_known_args()
    common = [f"--config.data.data_dir={args.data_dir}", f"--config.train.steps={args.steps}",
              "--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.ckpt_every=0",
              "--config.train.peak_flops=1e11", *overrides]
    variants = [("as_given", [])] + [(v.split("=", 1)[0], v.split("=", 1)[1].split(",")) for v in args.variant]
    for name, extra in variants:
        config = apply_overrides(load_config(args.config), common + extra)
        print(json.dumps({"variant": name, **run(config, args.steps)}), flush=True)


if __name__ == "__main__":
    main()
