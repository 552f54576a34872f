"""Text-to-voice (T2V): learn p(speaker vector | description) over a trained AR's speaker space.

The trained AR stage (`pretrained.ar_workdir`) sits frozen under `frozen`; its learnable speaker encoder
turns each training utterance into the vector v that synthesis conditions on. The pipeline
(`data.with_description`) pairs each utterance with a random description of its speaker
(speech_jax/text/voice_description.py), and `t2v` (speech_jax/models/text_to_voice.py) learns to sample
v from the description by flow matching. A sampled v is a voice (speech_jax/infer/voice.py): synthesis
takes it as it takes a PVC voice.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.models.ar_transformer import ARTransformer
from speech_jax.models.speaker_encoder import speaker_encoder_flops
from speech_jax.models.text_to_voice import TextToVoice
from speech_jax.text import voice_description


class T2VModel(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.frozen = ARTransformer(config.model, MelSpec.from_config(config.mel), rngs=rngs)
        self.t2v = TextToVoice(config.t2v, config.model.spk_dim, voice_description.VOCAB_SIZE, rngs=rngs)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> T2VModel:
    return T2VModel(config, rngs=rngs)


def speaker_vectors(model: T2VModel, batch: dict) -> jax.Array:
    """The frozen speaker encoder's vector of each utterance [B, spk_dim]."""
    return jax.lax.stop_gradient(model.frozen.speaker_encoder(batch["audio"], batch["audio_len"]))


def loss_fn(model: T2VModel, batch: dict, rng: jax.Array, step: jax.Array):
    del step
    v = speaker_vectors(model, batch)
    loss = jnp.mean(model.t2v.loss(v, batch["description_ids"], batch["description_len"], rng))
    return loss, dict(flow_loss=loss)


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.sum(a * b, -1) / (jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1) + 1e-8)


def eval_fn(model: T2VModel, batch: dict) -> dict:
    """The flow loss at a fixed draw, and how close a voice sampled from each utterance's (full)
    description lands to that utterance's speaker vector (`cosine`), against the next row's speaker
    (`cosine_other`, mostly another speaker: what a description-blind sampler would score), both in the
    standardised speaker space where every dimension counts alike."""
    t2v = model.t2v
    v = speaker_vectors(model, batch)
    ids, lengths = batch["description_ids"], batch["description_len"]
    loss = jnp.mean(t2v.loss(v, ids, lengths, jax.random.key(0)))
    z = (t2v.sample(ids, lengths, jax.random.key(1), steps=16) - t2v.mean[...]) / t2v.std[...]
    z_true = (v - t2v.mean[...]) / t2v.std[...]
    return dict(loss=loss, cosine=jnp.mean(_cosine(z, z_true)),
                cosine_other=jnp.mean(_cosine(z, jnp.roll(z_true, 1, axis=0))))


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """The frozen speaker encoder's forward over the batch's audio (no backward: nothing below it trains)
    plus 3 × T2V's forward (its parameters, twice a multiply-add each, per example)."""
    b, samples = batch_shapes["audio"]
    spec = MelSpec.from_config(config.mel)
    t = config.t2v
    h, d, L = t.flow_hidden, t.desc_d_model, batch_shapes["description_ids"][1]
    flow = 2 * (config.model.spk_dim * h + (d + t.time_dim) * h + t.flow_layers * 4 * h * h + h * config.model.spk_dim)
    text = L * t.desc_layers * (2 * 4 * d * d + 2 * 2 * L * d + 2 * 3 * d * t.desc_mlp_dim)
    return float(b * (speaker_encoder_flops(config.model, spec, samples // spec.hop_length) + 3 * (flow + text)))


def resolve_config(config) -> None:
    """The AR stage's model, mel and data settings, the T2V config's own data fields on top."""
    from speech_jax.train.restore import data_on_top, read_ar_stage
    workdir = config.pretrained.ar_workdir
    ar = read_ar_stage(workdir, "T2V", speaker_encoder=True)
    with config.unlocked():
        config.model, config.mel, config.data = ar.model, ar.mel, data_on_top(ar.data, config.data)


def load_pretrained(state, config):
    """The AR stage's weights into `frozen`; T2V's `mean` and `std`: the speaker space's statistics over
    up to `t2v.statistics_utterances` training utterances."""
    from speech_jax.train.restore import load_model, with_frozen_stage
    from speech_jax.train.tasks.pvc import speaker_vectors_of
    workdir = config.pretrained.ar_workdir
    state = with_frozen_stage(state, workdir, "ar")
    _, ar = load_model(workdir, "ar")
    v = speaker_vectors_of(ar, corpus_audio(config.data, config.data.train_split, config.t2v.statistics_utterances))
    stats = dict(mean=v.mean(0), std=np.maximum(v.std(0), 1e-3 * v.std(0).max() + 1e-6))
    rest = jax.tree.map(lambda x: x, state.rest)
    for name, value in stats.items():  # the variable's array, replaced where it lies
        rest["t2v"][name] = jax.tree.map(
            lambda x, a=value: jax.make_array_from_callback(x.shape, x.sharding, lambda idx: a[idx]), rest["t2v"][name])
    return state.replace(rest=rest)


def corpus_audio(cfg, split: str, limit: int) -> list[np.ndarray]:
    """Up to `limit` utterances of `split` spread evenly over its records (every speaker shows up), as
    float32 audio at `cfg.sample_rate`, cut to data.max_seconds."""
    from data_pipelines.sources import open_source
    from speech_jax.audio.io import resample, to_float32
    source = open_source(cfg.name, cfg.data_dir, split)
    out = []
    for i in np.linspace(0, len(source) - 1, min(limit, len(source))).astype(int):
        record = source[int(i)]
        audio = resample(to_float32(np.asarray(record["audio"])), int(record["sample_rate"]), cfg.sample_rate)
        if len(audio) >= cfg.min_seconds * cfg.sample_rate:
            out.append(audio[:int(cfg.max_seconds * cfg.sample_rate)])
    if len(out) < 2:
        raise ValueError(f"{cfg.name}/{split} has fewer than 2 utterances of at least {cfg.min_seconds} s: "
                         f"T2V's speaker statistics need more")
    return out
