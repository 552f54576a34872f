"""Professional voice cloning (PVC): fit one speaker's condition vector on a few minutes of their speech.

The trained AR transformer (with its speaker encoder) sits frozen under `frozen`; the one trainable
parameter is `voice` [spk_dim]: the vector the speaker encoder would give. It reaches the AR's speaker
slot through the AR's own projection (`speaker_slot`), so a saved voice (`speech_jax.infer.voice`) stands in
for a reference recording at synthesis.

It starts at the mean speaker-encoder vector over the speaker's utterances (zero-shot cloning's answer,
averaged) and descends the AR's next-token loss on those utterances (`data.speaker` selects them; the
zero-shot layout: no reference, no prompt), as the AR stage computes it (`ar.token_loss`), plus
`pvc.anchor_weight` × ‖v − v₀‖² / ‖v₀‖²: a pull toward the starting vector. Flow matching was trained on
speaker-encoder outputs only and renders a vector fitted away from them unvoiced, so the voice file gives
it v₀ (`v_fm`) unless `pvc.fit_flow_matching` (README, "Professional voice cloning"). A flow matching
stage that trained a speaker encoder of its own takes the mean of that encoder's vectors instead
(`speech_jax.pvc.clone_voice`, given its workdir).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.layers import param
from speech_jax.models.ar_transformer import ARTransformer, flops_per_token
from speech_jax.train.tasks.ar import token_loss

# The AR stage's data settings and loss: the target's tokens, never its audio (data.target_audio).
TRAINS_ON_TARGET_AUDIO = False


class PVCModel(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.frozen = ARTransformer(config.model, MelSpec.from_config(config.mel), rngs=rngs)
        self.voice = param(rngs, nnx.initializers.zeros_init(), (config.model.spk_dim,), (None,))
        self.start = nnx.Variable(jnp.zeros((config.model.spk_dim,), jnp.float32))  # v₀: set by load_pretrained
        self.anchor_weight = float(config.get("pvc", {}).get("anchor_weight", 0.0))


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> PVCModel:
    return PVCModel(config, rngs=rngs)


def _zero_shot(batch: dict) -> tuple[dict, jax.Array]:
    """The batch with empty prompt segments (the pipeline reads none: data.with_prompt is off)."""
    b = batch["text_len"].shape[0]
    empty, zero = jnp.zeros((b, 0), jnp.int32), jnp.zeros((b,), jnp.int32)
    batch = dict(batch, prompt_text_ids=empty, prompt_text_len=zero, prompt_tokens=empty, prompt_tokens_len=zero)
    return batch, jnp.zeros((b,), bool)


def _loss(model: PVCModel, batch: dict):
    batch, one_shot = _zero_shot(batch)
    v = jnp.broadcast_to(model.voice[...], (batch["text_len"].shape[0], model.voice.shape[0]))
    # The AR's token loss alone: its alignment CTC (if it trained with one) is a training aid of the AR.
    loss, acc, eos_acc, n, _ = token_loss(model.frozen, batch, model.frozen.speaker_slot(v), one_shot,
                                          aids=False)
    return loss, acc, eos_acc, n


def voice_shift(model: PVCModel) -> jax.Array:
    """‖v − v₀‖² / ‖v₀‖²: how far the voice has moved from where it started, relative to its size."""
    start = model.start[...]
    return jnp.sum(jnp.square(model.voice[...] - start)) / jnp.maximum(jnp.sum(jnp.square(start)), 1e-12)


def loss_fn(model: PVCModel, batch: dict, rng: jax.Array, step: jax.Array):
    del rng, step
    token, acc, eos_acc, n = _loss(model, batch)
    shift = voice_shift(model)
    return token + model.anchor_weight * shift, dict(
        token_loss=token, token_accuracy=acc, eos_accuracy=eos_acc, target_tokens=n,
        voice_norm=jnp.linalg.norm(model.voice[...]), voice_shift=shift)


def eval_fn(model: PVCModel, batch: dict) -> dict:
    loss, acc, eos_acc, _ = _loss(model, batch)
    return dict(loss=loss, token_accuracy=acc, eos_accuracy=eos_acc)


def tokens_in_batch(batch: dict) -> int:
    return int(np.sum(batch["tokens_len"]))


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """3 × the frozen AR's forward over the zero-shot layout (the backward pass still runs through every
    activation to reach the voice, though no weight gradient is formed)."""
    b, lt = batch_shapes["text_ids"]
    seq = 1 + lt + 1 + batch_shapes["tokens"][1] + 1
    return float(3 * b * seq * flops_per_token(config.model, seq / 2))


# --- the frozen AR and the starting vector --------------------------------------------------------

def resolve_config(config) -> None:
    """The AR stage's model, mel and data settings, with the PVC config's own data fields on top."""
    from speech_jax.train.restore import data_on_top, read_ar_stage
    workdir = config.pretrained.ar_workdir
    ar = read_ar_stage(workdir, "PVC", speaker_encoder=True)
    if not config.data.speaker:
        raise ValueError("PVC fits one speaker: set data.speaker to a speaker id of the corpus")
    with config.unlocked():
        config.model, config.mel, config.data = ar.model, ar.mel, data_on_top(ar.data, config.data)


def speaker_audio(cfg, split: str) -> list[np.ndarray]:
    """float32 audio at `cfg.sample_rate` of `cfg.speaker`'s utterances in `split` (the usable lengths,
    at most data.max_seconds each)."""
    from data_pipelines.pipeline import speaker_records
    from data_pipelines.sources import open_source, split_index
    from speech_jax.audio.io import resample, to_float32
    source = open_source(cfg.name, cfg.data_dir, split)
    speakers = split_index(cfg.name, cfg.data_dir, split, source)["speaker"]
    out = []
    for i in speaker_records(speakers, cfg.speaker, f"{cfg.name}/{split}"):
        record = source[int(i)]
        audio = to_float32(np.asarray(record["audio"]))
        audio = resample(audio, int(record["sample_rate"]), cfg.sample_rate)
        if len(audio) >= cfg.min_seconds * cfg.sample_rate:
            out.append(audio[:int(cfg.max_seconds * cfg.sample_rate)])
    if not out:
        raise ValueError(f"speaker {cfg.speaker!r} has no utterance of at least {cfg.min_seconds} s in {split}")
    return out


def speaker_vectors_of(model, audios: list[np.ndarray], batch: int = 8) -> np.ndarray:
    """The vector of each of `audios`, [len(audios), spk_dim] float32, from `model.speaker_encoder` (the AR's,
    or the one a flow matching stage trained)."""
    graphdef, state = nnx.split(model.speaker_encoder)
    encode = jax.jit(lambda s, a, n: nnx.merge(graphdef, s)(a, n))
    width = max(len(a) for a in audios)  # one shape: one compilation
    vectors = []
    for i in range(0, len(audios), batch):
        chunk = audios[i:i + batch]
        padded = np.zeros((batch, width), np.float32)
        lengths = np.ones((batch,), np.int32)  # filler rows: ignored below
        for row, a in enumerate(chunk):
            padded[row, :len(a)], lengths[row] = a, len(a)
        vectors.append(np.asarray(encode(state, padded, lengths))[:len(chunk)])
    return np.concatenate(vectors).astype(np.float32)


def mean_speaker_vector(model, audios: list[np.ndarray]) -> np.ndarray:
    """The mean of a speaker encoder's vectors of `audios` (`speaker_vectors_of`), [spk_dim] float32."""
    return speaker_vectors_of(model, audios).mean(0)


def load_pretrained(state, config):
    """The AR stage's weights into `frozen`; the voice starts at the speaker's mean speaker vector."""
    from speech_jax.train.restore import load_model, with_frozen_stage
    workdir = config.pretrained.ar_workdir
    state = with_frozen_stage(state, workdir, "ar")
    # The starting vector on one device (a full copy on every host), then onto the voice's sharding.
    _, ar = load_model(workdir, "ar")
    v = mean_speaker_vector(ar, speaker_audio(config.data, config.data.train_split))
    leaves = jax.tree.leaves(state.params)
    if len(leaves) != 1 or leaves[0].shape != v.shape:
        raise ValueError(f"PVC trains the voice vector [{v.shape[0]}] only, its parameters are "
                         f"{[x.shape for x in leaves]}")
    def at_start(tree):
        return jax.tree.map(lambda x: jax.make_array_from_callback(x.shape, x.sharding, lambda idx: v[idx]), tree)
    rest = jax.tree.map(lambda x: x, state.rest)
    rest["start"] = at_start(rest["start"])
    return state.replace(params=at_start(state.params), rest=rest)
