"""Training task for latent flow matching: OT-CFM from 25 Hz tokens + speaker vector to Flow-VAE latents.

The speaker encoder (trained with the AR stage) and the Flow-VAE (its decoder turns generated latents
into audio for evaluation) are earlier stages: they sit under the model's `frozen` attribute, so they
get no gradients or optimizer state, and their weights are copied in from their workdirs when a run
starts (`load_pretrained`), then travel in every checkpoint.

`model.speaker_encoder`: "frozen" (the AR's encoder as it is; one vector serves both stages) or "trained":
flow matching's own copy, starting from the AR's and trained by this stage's loss. The AR's encoder learns
what predicts tokens; the voice's pitch and timbre, which only the latents carry, it need not keep.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.infer import ode
from speech_jax.models import cfm, gan_losses
from speech_jax.models.flow_matching import FlowMatchingDiT, flops_per_frame
from speech_jax.models.flow_vae import FlowVAE
from speech_jax.models.latent_norm import LatentNorm, scales
from speech_jax.models.speaker_encoder import SpeakerEncoder, speaker_encoder_flops

# The step reads the target's tokens and latents; only evaluation renders and compares its audio, so training
# batches need not decode it (data.target_audio).
TRAINS_ON_TARGET_AUDIO = False


class Frozen(nnx.Module):
    """Pretrained parts of earlier stages (not trained here)."""

    def __init__(self, speaker_encoder: SpeakerEncoder | None, vae: FlowVAE):
        self.speaker_encoder = speaker_encoder
        self.vae = vae


SPEAKER_ENCODERS = ("frozen", "trained")


def speaker_encoder_kind(config: ml_collections.ConfigDict) -> str:
    kind = config.model.get("speaker_encoder", "frozen")  # older configs: the AR's, frozen
    if kind not in SPEAKER_ENCODERS:
        raise ValueError(f"model.speaker_encoder is {kind!r}; one of {SPEAKER_ENCODERS}")
    return kind


class FlowMatchingStage(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        cfg = config.model
        self.dit = FlowMatchingDiT(cfg, rngs=rngs)
        # Older configs have no `latent_norm`: their checkpoints hold no statistics.
        kind = cfg.get("latent_norm", "none")
        self.latent_norm = LatentNorm(int(cfg.latent_dim), kind) if kind != "none" else None
        encoder = SpeakerEncoder(config.speaker, MelSpec.from_config(config.mel), rngs=rngs)
        trained = speaker_encoder_kind(config) == "trained"
        self.speaker_encoder = encoder if trained else None
        self.frozen = Frozen(None if trained else encoder, FlowVAE(config.vae, rngs=rngs))
        c = cfg
        self.loss_settings = dict(sigma_min=float(c.sigma_min), prompt_prob=float(c.prompt_prob),
                                  prompt_max_frac=float(c.prompt_max_frac), prompt_min_frac=float(c.prompt_min_frac),
                                  drop_prob=float(c.drop_prob), time_sampling=str(c.time_sampling))
        self.sample_settings = dict(steps=int(c.eval_steps), method=str(c.eval_method),
                                    grid_kind=str(c.eval_grid), cfg_weight=float(c.eval_cfg_weight))
        self.sample_rate = int(config.data.sample_rate)

    def encode_speaker(self, ref_audio, ref_len):
        """Reference audio [B, T], lengths [B] -> flow matching's speaker vector [B, spk_dim]."""
        if self.speaker_encoder is not None:
            return self.speaker_encoder(ref_audio, ref_len)
        return jax.lax.stop_gradient(self.frozen.speaker_encoder(ref_audio, ref_len))

    def speaker_vector(self, batch):
        return self.encode_speaker(batch["ref_audio"], batch["ref_len"])

    def to_flow(self, z):
        """Flow-VAE latents -> the space flow matching models."""
        return z if self.latent_norm is None else self.latent_norm.normalize(z)

    def from_flow(self, x):
        """Flow matching's samples -> Flow-VAE latents."""
        return x if self.latent_norm is None else self.latent_norm.denormalize(x)

    def sample_latents(self, x0, tokens, frame_mask, spk, prompt, prompt_mask, **settings):
        """Flow-VAE latents [B,F,D] sampled from noise x0 given the conditions; `prompt` is in Flow-VAE
        latents too (only its `prompt_mask` frames are read)."""
        x = ode.sample(self.dit, x0, tokens, frame_mask, spk, self.to_flow(prompt), prompt_mask, **settings)
        return self.from_flow(x)


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> FlowMatchingStage:
    return FlowMatchingStage(config, rngs=rngs)


def _frames(model: FlowMatchingStage, batch):
    """The target latents in flow matching's space, zero on padded frames, and the frame mask."""
    latents = batch["latents"]
    frame_mask = jnp.arange(latents.shape[1])[None] < 2 * batch["tokens_len"][:, None]
    return jnp.where(frame_mask[..., None], model.to_flow(latents), 0), frame_mask


def loss_fn(model: FlowMatchingStage, batch: dict, rng: jax.Array, step: jax.Array):
    del step
    x1, frame_mask = _frames(model, batch)
    return cfm.cfm_loss(model.dit, x1, frame_mask, batch["tokens"], model.speaker_vector(batch), rng,
                        **model.loss_settings)


def eval_fn(model: FlowMatchingStage, batch: dict) -> dict:
    """Validation loss (fixed draws), then latents sampled from ground-truth tokens and speaker vectors,
    decoded by the Flow-VAE: the multi-scale mel distance to the real audio (and to the Flow-VAE's own
    resynthesis, the floor this stage can reach)."""
    x1, frame_mask = _frames(model, batch)
    spk = model.speaker_vector(batch)
    loss, _ = cfm.cfm_loss(model.dit, x1, frame_mask, batch["tokens"], spk, jax.random.key(0),
                           **model.loss_settings)
    x0 = jax.random.normal(jax.random.key(1), x1.shape, jnp.float32)
    none = jnp.zeros_like(frame_mask)
    z = model.sample_latents(x0, batch["tokens"], frame_mask, spk, jnp.zeros_like(x1), none,
                             **model.sample_settings)
    vae = model.frozen.vae
    wav_hat = vae.decode(z, frame_mask)
    wav_vae = vae.decode(batch["latents"], frame_mask)
    t = min(wav_hat.shape[1], batch["audio"].shape[1])
    mask = jnp.arange(t)[None] < jnp.minimum(batch["audio_len"], 2 * batch["tokens_len"] * vae.hop)[:, None]
    wav = batch["audio"][:, :t] * mask
    wav_hat, wav_vae = wav_hat[:, :t] * mask, wav_vae[:, :t] * mask
    mel = lambda a, b: gan_losses.multiscale_mel_loss(a, b, model.sample_rate, mask)  # noqa: E731
    return dict(loss=loss, mel_distance=mel(wav, wav_hat), vae_mel_distance=mel(wav, wav_vae),
                wav=wav, wav_hat=wav_hat, wav_vae=wav_vae, sample_len=jnp.sum(mask, 1).astype(jnp.int32))


def host_eval_wanted(config) -> bool:
    return bool(config.model.get("eval_voicing", False))


def host_eval(outputs: dict, labels: dict, tokenizer, config) -> dict:
    """With `model.eval_voicing`: is what the decoder makes of the sampled latents voiced? pYIN's
    voiced-frame fraction relative to the real audio's (`voiced_ratio`, the tokens rung of
    experiments/ceilings.py) and recall of its voiced frames (`voiced_recall`), beside the same for the
    Flow-VAE's own resynthesis (`vae_*`: the ceiling). Utterances under 5 % voiced (whispered voices) are
    left out: they have no voicing to keep."""
    if not host_eval_wanted(config):
        return {}
    from speech_jax.eval.voicing import voicing_agreement
    sr, lens = int(config.data.sample_rate), np.asarray(outputs["sample_len"])
    out = {}
    for prefix, key in (("", "wav_hat"), ("vae_", "wav_vae")):
        rows = [voicing_agreement(np.asarray(outputs["wav"][i, :n]), np.asarray(outputs[key][i, :n]), sr)
                for i, n in enumerate(lens)]
        rows = [r for r in rows if r["voiced_fraction_reference"] >= 0.05]
        if not rows:
            return {}
        out[f"{prefix}voiced_ratio"] = (sum(r["voiced_fraction_estimate"] for r in rows)
                                        / sum(r["voiced_fraction_reference"] for r in rows))
        out[f"{prefix}voiced_recall"] = float(np.mean([r["voiced_recall"] for r in rows]))
    return out


def eval_artifacts(outputs: dict, labels: dict, directory: str, config, count: int = 3) -> None:
    from speech_jax.eval.artifacts import save_mel_comparison, save_wavs
    sr = int(config.data.sample_rate)
    lens = np.asarray(outputs["sample_len"])
    items = {}
    for i in range(min(count, len(lens))):
        items[f"{i}_original"] = np.asarray(outputs["wav"][i, :lens[i]])
        items[f"{i}_generated"] = np.asarray(outputs["wav_hat"][i, :lens[i]])
    save_wavs(directory, items, sr)
    save_mel_comparison(f"{directory}/mel.png", items["0_original"], items["0_generated"], sr,
                        title="original / flow matching from ground-truth tokens")


def resolve_config(config) -> None:
    """`speaker` and `vae` model settings come from the pretrained stages' own saved configs.

    With both workdirs "" they are taken as given in the config (compiling the step ahead of training
    those stages); such a config cannot start training (`load_pretrained`)."""
    if not config.pretrained.ar_workdir and not config.pretrained.flow_vae_workdir:
        if not config.speaker or not config.vae:
            raise ValueError("without pretrained.ar_workdir and pretrained.flow_vae_workdir, config.speaker and "
                             "config.vae must hold the AR stage's and the Flow-VAE's model settings")
        config.model.spk_dim = int(config.speaker.spk_dim)
        return
    from speech_jax.train.restore import read_config
    ar, vae = read_config(config.pretrained.ar_workdir), read_config(config.pretrained.flow_vae_workdir)
    if ar.stage != "ar" or vae.stage != "flow_vae":
        raise ValueError(f"pretrained.ar_workdir must hold an ar stage (has {ar.stage!r}) and "
                         f"pretrained.flow_vae_workdir a flow_vae stage (has {vae.stage!r})")
    if ar.model.speaker != "learnable":
        raise ValueError(f"the AR stage in {config.pretrained.ar_workdir} has no learnable speaker encoder "
                         f"(speaker={ar.model.speaker!r})")
    if ar.mel.to_dict() != config.mel.to_dict():
        raise ValueError("config.mel differs from the AR stage's, whose speaker encoder reads that mel")
    if int(vae.data.sample_rate) != int(config.data.sample_rate):
        raise ValueError(f"the Flow-VAE runs at {vae.data.sample_rate} Hz, data.sample_rate is {config.data.sample_rate}")
    with config.unlocked():
        config.speaker = ar.model
        config.vae = vae.model
    config.model.spk_dim = int(ar.model.spk_dim)


def load_pretrained(state, config):
    """Copies the AR stage's speaker encoder (into the frozen parts, or the trained ones when flow matching
    trains its own) and the Flow-VAE (frozen) into a fresh state, and measures the latent statistics
    (`model.latent_norm`) on the extracted training latents."""
    from speech_jax.train.restore import load_stage
    if not config.pretrained.ar_workdir or not config.pretrained.flow_vae_workdir:
        raise ValueError("flow matching trains on a pretrained speaker encoder and Flow-VAE: set "
                         "pretrained.ar_workdir and pretrained.flow_vae_workdir")
    # Straight onto this run's mesh (every host holds its shards), weights only.
    mesh = jax.tree.leaves(state.rest)[0].sharding.mesh
    _, _, ar_params, _ = load_stage(config.pretrained.ar_workdir, "ar", mesh=mesh)
    _, _, vae_params, _ = load_stage(config.pretrained.flow_vae_workdir, "flow_vae", mesh=mesh)
    rest, params = jax.tree.map(lambda x: x, state.rest), jax.tree.map(lambda x: x, state.params)
    encoder_at = params if speaker_encoder_kind(config) == "trained" else rest["frozen"]
    for at, name, src in ((encoder_at, "speaker_encoder", ar_params["speaker_encoder"]),
                          (rest["frozen"], "vae", vae_params["generator"])):
        dst = at[name]
        if jax.tree.structure(dst) != jax.tree.structure(src):
            raise ValueError(f"the pretrained {name} does not match config.{'speaker' if name != 'vae' else 'vae'}")
        at[name] = jax.tree.map(lambda d, s: jax.device_put(s.astype(d.dtype), d.sharding), dst, src)
    kind = config.model.get("latent_norm", "none")
    if kind != "none":
        from data_pipelines.extracted import extracted_dir, latent_statistics
        stats = latent_statistics(extracted_dir(config.data.name, config.data.data_dir, config.data.extracted))
        for dst, value in zip(("mean", "std"), scales(kind, stats["mean"], stats["std"])):
            var = rest["latent_norm"][dst]
            var.value = jax.device_put(value.astype(var.value.dtype), var.value.sharding)
    return state.replace(params=params, rest=rest)


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """3 × the DiT's forward FLOPs over the padded latent frames, plus 3 × the speaker encoder's when it
    trains here (a frozen one's forward is left out, as in the other stages that read a frozen model)."""
    b, f = batch_shapes["latents"][:2]
    fwd = f * flops_per_frame(config.model, f)
    if speaker_encoder_kind(config) == "trained":
        spec = MelSpec.from_config(config.mel)
        fwd += speaker_encoder_flops(config.speaker, spec, batch_shapes["ref_audio"][1] // spec.hop_length)
    return float(3 * b * fwd)
