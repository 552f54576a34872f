"""`speech-jax validate`: a trained stage's evaluation, run on demand from its workdir.

The same evaluation the loop logs during training (e.g. resynthesis PESQ/STOI/MS-STFT for the
Flow-VAE, teacher-forced accuracy and speaker EER for the AR stage), on any split and number of
batches, with the task's samples (wavs, mel PNGs) written to `out_dir`.
"""
from __future__ import annotations

import json
import os

from speech_jax.train import checkpoint
from speech_jax.train.loop import Trainer
from speech_jax.train.restore import read_config


def restored_trainer(config, workdir: str, step: int | None = None):
    """(Trainer, step, train state) of the stage in `workdir` at `step` (default: the newest checkpoint)."""
    trainer = Trainer(config, workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        abstract = checkpoint.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
        restored_step, state, _ = ckpt.restore(abstract, None, step)
    finally:
        ckpt.close()
    return trainer, restored_step, state


def validate(workdir: str, *, split: str | None = None, batches: int | None = None,
             out_dir: str | None = None, step: int | None = None) -> dict:
    config = read_config(workdir, step)
    if batches:
        config.train.eval_batches = batches
    trainer, restored_step, state = restored_trainer(config, workdir, step)
    out_dir = out_dir or os.path.join(workdir, "validate", f"step_{restored_step}")
    os.makedirs(out_dir, exist_ok=True)
    split = split or config.data.eval_split
    result = {"step": restored_step, "split": split, **trainer.evaluate(state, out_dir, split)}
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result
