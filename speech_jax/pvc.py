"""`speech-jax pvc`: professional voice cloning, from a corpus speaker to a voice file.

Trains the `pvc` stage (`speech_jax.train.tasks.pvc`) through the one training loop in `workdir`
(resumable like any stage), then writes the fitted vector with `save_voice`; synthesis takes it with
`--voice`.
"""
from __future__ import annotations

import os

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "experiments", "pvc", "demo.py")


def clone_voice(*, data_dir: str, speaker: str, ar: str, out: str, workdir: str, split: str = "test_unseen",
                config_file: str | None = None, overrides: list[str] = (), flow_matching: str | None = None) -> dict:
    """Fits `speaker`'s voice (their utterances in `split` of the AR stage's corpus under `data_dir`) for
    the AR stage in `ar`; returns {"voice": the written file, "metrics": the run's last logged row}.

    `flow_matching`: the workdir of a flow matching stage the voice will be synthesised with. When that stage
    trained a speaker encoder of its own, the voice's `v_fm` is the mean of that encoder's vectors over the
    same utterances (without it, such a stage refuses the voice)."""
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.infer.voice import save_voice
    from speech_jax.train.loop import train
    from speech_jax.train.restore import load_stage

    config = apply_overrides(load_config(config_file or DEFAULT_CONFIG), list(overrides))
    if config.stage != "pvc":
        raise ValueError(f"{config_file} is a {config.stage!r} config, not a pvc one (experiments/pvc/)")
    fit_both = config.get("pvc", {}).get("fit_flow_matching", False)
    own_encoder = flow_matching is not None and _trains_its_speaker_encoder(flow_matching)
    if fit_both and own_encoder:
        raise ValueError(f"pvc.fit_flow_matching fits the AR's speaker space, but the flow matching stage in "
                         f"{flow_matching} reads its own speaker encoder's: leave pvc.fit_flow_matching False")
    config.pretrained.ar_workdir = ar
    config.data.data_dir = data_dir
    config.data.speaker = speaker
    config.data.train_split = config.data.eval_split = split
    metrics = train(config, workdir)
    trained, _, params, rest = load_stage(workdir, "pvc")
    ar_step = load_stage_step(ar)
    voice, = jax.tree.leaves(params)  # the stage's one parameter
    # Flow matching keeps the starting vector (a speaker-encoder output, as it was trained on) unless told.
    v_fm = None if fit_both else np.asarray(jax.tree.leaves(rest["start"])[0])
    extra = {}
    if own_encoder:
        v_fm = _flow_matching_vector(flow_matching, trained.data, split)
        extra = dict(flow_matching_workdir=os.path.abspath(flow_matching))
    path = save_voice(out, np.asarray(voice), v_fm=v_fm, made_by="pvc", speaker=speaker, corpus=trained.data.name,
                      split=split, steps=int(metrics["step"]), ar_workdir=os.path.abspath(ar), ar_step=ar_step,
                      **extra)
    return {"voice": path, "metrics": metrics}


def _trains_its_speaker_encoder(workdir: str) -> bool:
    from speech_jax.train.restore import read_config
    from speech_jax.train.tasks.flow_matching import speaker_encoder_kind
    config = read_config(workdir)
    if config.stage != "flow_matching":
        raise ValueError(f"{workdir} holds a {config.stage!r} stage, not flow_matching")
    return speaker_encoder_kind(config) == "trained"


def _flow_matching_vector(workdir: str, data, split: str) -> np.ndarray:
    """The mean of the flow matching stage's own speaker-encoder vectors over the speaker's utterances."""
    from speech_jax.train.restore import load_model
    from speech_jax.train.tasks.pvc import mean_speaker_vector, speaker_audio
    _, fm = load_model(workdir, "flow_matching")
    return mean_speaker_vector(fm, speaker_audio(data, split))


def load_stage_step(workdir: str) -> int:
    """The newest checkpoint step of a stage (the one PVC fitted the voice for)."""
    from speech_jax.train.checkpoint import Checkpointer
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    try:
        return int(ckpt.latest_step())
    finally:
        ckpt.close()
