"""Continue a trained stage from its latest checkpoint, in a new workdir, with its own saved config.

  python experiments/continue_stage.py --from P145/workdirs/flow_vae --out W --steps 1000 \
      [--config.model.disc_start_step=9217] [--config.train.eval_every=2000]

The new workdir starts from a copy of the source's latest checkpoint (the source is left as it is); `train.steps`
grows by `--steps`, and `--config.k=v` overrides apply to the saved config, so a long recipe's stage can go on
with a setting changed, e.g. the Flow-VAE's discriminators from the step it stopped at
(docs/what_limits_quality.md, "The long recipe at 4.9 units"). Running it again resumes the continuation.
"""
from __future__ import annotations

import argparse
import os
import shutil

from speech_jax.cli import configure_logging
from speech_jax.config import apply_overrides
from speech_jax.train.loop import train
from speech_jax.train.restore import latest_step, read_config


def continue_stage(source: str, out: str, steps: int, overrides: list[str]) -> dict:
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if os.path.realpath(out) == os.path.realpath(source):
        raise ValueError("--out must be a new workdir: the source stays as it is")
    start = latest_step(source)
    config = read_config(source, start)
    config.train.steps = start + steps
    config = apply_overrides(config, overrides)
    if not os.path.exists(os.path.join(out, "checkpoints")):  # else: a continuation to resume
        shutil.copytree(os.path.join(source, "checkpoints", str(start)), os.path.join(out, "checkpoints", str(start)))
    return train(config, out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, help="the trained stage's workdir")
    p.add_argument("--out", required=True, help="the new workdir")
    p.add_argument("--steps", type=int, required=True, help="steps beyond the source's latest checkpoint")
    args, overrides = p.parse_known_args()
    configure_logging()
    try:
        print(continue_stage(args.source, args.out, args.steps, overrides))
    except (FileNotFoundError, ValueError) as e:  # a missing source, bad steps or overrides: no traceback
        p.exit(2, f"continue_stage: error: {e}\n")


if __name__ == "__main__":
    main()
