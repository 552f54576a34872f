"""`speech-jax t2v` and `synthesize --voice-description`: a voice from words.

A trained `t2v` stage (`speech-jax train --config experiments/t2v/...`) samples a speaker vector for a
description; the vector is a voice like a PVC one (`speech_jax.infer.voice`), so it is saved as a voice file
or handed to synthesis directly.
"""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np


def load_t2v(workdir: str):
    """(config, T2V model) of a trained t2v stage; the frozen AR is dropped."""
    from speech_jax.train.restore import load_model
    config, model = load_model(workdir, "t2v")
    return config, model.t2v


def voice_from_description(workdir: str, description: str, *, seed: int = 0, guidance: float = 0.0,
                           steps: int = 32, model=None):
    """A `Voice` sampled for `description` by the t2v stage in `workdir` (`model`: a `load_t2v` result to
    reuse). Words the model does not know are logged and skipped; a description with none is an error."""
    from speech_jax.infer.voice import Voice
    from speech_jax.text import voice_description
    from speech_jax.pvc import load_stage_step
    config, t2v = model or load_t2v(workdir)
    ids, unknown = voice_description.encode(description, config.data.max_description_len)
    if unknown:
        logging.warning("T2V skips words it does not know: %s", ", ".join(unknown))
    if ids.size == 0:
        raise ValueError(f"the description {description!r} has no word this T2V model knows; it reads "
                         f"language, gender, pitch and pace words: {' '.join(voice_description.VOCAB)}")
    padded = np.zeros((1, config.data.max_description_len), np.int32)
    padded[0, :ids.size] = ids
    v = t2v.sample(jnp.asarray(padded), jnp.asarray([ids.size], jnp.int32), jax.random.key(seed),
                   steps=steps, guidance=guidance)
    return Voice(np.asarray(v[0], np.float32), dict(
        made_by="t2v", description=description, seed=seed, guidance=guidance, t2v_workdir=os.path.abspath(workdir),
        t2v_step=load_stage_step(workdir), ar_workdir=os.path.abspath(config.pretrained.ar_workdir)))
