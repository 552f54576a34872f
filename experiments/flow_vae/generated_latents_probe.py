"""Does fine-tuning the Flow-VAE's decoder on flow matching's own latents voice them?

The decoder trained on its encoder's means; flow matching's latents of the same audio sit off them, and the
decoder renders them unvoiced (docs/what_limits_quality.md, "The chain's rungs"). Tacotron 2 met the same gap
between predicted and true features by training its vocoder on the predicted ones, aligned with the real audio.
Here: a trained flow-matching stage samples latents from each training utterance's true tokens and its
speaker vector (another utterance of the same voice, as in training), and the decoder alone learns to render
them as that utterance's audio, on one-second windows, with the Flow-VAE's own reconstruction losses (multi-scale
mel and multi-resolution STFT, the config's weights).

Before and after, on held-out batches of the flow-matching stage's data (fixed noise): the voicing of the
decoded samples against the real audio (pYIN voiced-frame and pitch recall), their mel distance to it, and the
same for the posterior means' resynthesis (what the decoder must not forget). A go/no-go for building this
into the recipe, not the recipe itself:

    python experiments/flow_vae/generated_latents_probe.py --flow-matching W [--steps 300] [--split test_unseen]
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines.pipeline import make_dataset
from speech_jax.eval import voicing
from speech_jax.models import gan_losses
from speech_jax.train.restore import load_model, read_config
from speech_jax.train.tasks import flow_matching as fm_task

FIELDS = ("tokens", "tokens_len", "latents", "audio", "audio_len", "ref_audio", "ref_len")


def batches(config, split: str, training: bool):
    cfg = config.data.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.target_audio = True  # the decoder learns to render the target's audio, which flow matching skips
    data = make_dataset(cfg, split=split, training=training, frame_multiple=2 * config.mel.hop_length)
    for batch in data:
        yield {k: jnp.asarray(batch[k]) for k in FIELDS}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow-matching", required=True, help="a trained flow_matching workdir")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--window", type=int, default=50, help="latent frames a training window holds")
    p.add_argument("--split", default="validation", help="the held-out split scored before and after")
    p.add_argument("--eval-batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    config, fm = load_model(args.flow_matching, "flow_matching")
    vae_optim = read_config(config.pretrained.flow_vae_workdir).optim
    vae, sr = fm.frozen.vae, int(config.data.sample_rate)
    hop, vc = vae.hop, config.vae
    weights = dict(mel=float(vc.lambda_mel), stft=float(vc.get("lambda_stft", 0.0)))
    mel_scales = tuple(tuple(s) for s in vc.mel_scales)
    stft_ffts = tuple(vc.get("stft_loss_ffts", (512, 1024, 2048)))
    fm_graph, fm_state = nnx.split(fm)
    dec_graph, dec_params, dec_rest = nnx.split(vae.decoder, nnx.Param, ...)
    start_params = dec_params

    @jax.jit
    def sample(batch, key):
        model = nnx.merge(fm_graph, fm_state)
        _, frame_mask = fm_task._frames(model, batch)
        x1 = batch["latents"].astype(jnp.float32)
        x0 = jax.random.normal(key, x1.shape, jnp.float32)
        z = model.sample_latents(x0, batch["tokens"], frame_mask, model.speaker_vector(batch),
                                 jnp.zeros_like(x1), jnp.zeros_like(frame_mask), **model.sample_settings)
        return z, x1, frame_mask

    def windows(z, batch, frame_mask, key):
        """Each utterance's random window of `window` frames, and its audio."""
        w = args.window
        frames = jnp.sum(frame_mask, axis=1)
        start = jnp.floor(jax.random.uniform(key, frames.shape) * jnp.maximum(frames - w + 1, 1)).astype(jnp.int32)
        z = jnp.pad(z, ((0, 0), (0, w), (0, 0)))
        audio = jnp.pad(batch["audio"].astype(jnp.float32), ((0, 0), (0, w * hop)))
        z_win = jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s, w, 0))(z, start)
        wav_win = jax.vmap(lambda x, s: jax.lax.dynamic_slice_in_dim(x, s * hop, w * hop, 0))(audio, start)
        valid = jnp.minimum(frames - start, w)
        mask = jnp.arange(w * hop)[None] < (valid * hop)[:, None]
        return z_win, wav_win * mask, jnp.arange(w)[None] < valid[:, None], mask

    def loss_of(params, z_win, wav, frame_mask, mask):
        wav_hat = nnx.merge(dec_graph, params, dec_rest)(z_win, frame_mask) * mask
        mel = gan_losses.multiscale_mel_loss(wav, wav_hat, sr, mask, mel_scales)
        loss = weights["mel"] * mel
        if weights["stft"]:
            loss = loss + weights["stft"] * gan_losses.multiresolution_stft_distance(wav, wav_hat, stft_ffts, mask)
        return loss, mel

    tx = optax.chain(optax.clip_by_global_norm(float(vae_optim.clip_norm)), optax.adam(args.learning_rate))

    @jax.jit
    def train_step(params, opt, batch, key):
        k1, k2 = jax.random.split(key)
        z, _, frame_mask = sample(batch, k1)
        z_win, wav, fmask, mask = windows(z, batch, frame_mask, k2)
        (loss, mel), grads = jax.value_and_grad(loss_of, has_aux=True)(params, z_win, wav, fmask, mask)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss, mel

    @jax.jit
    def decode_both(params, batch, key):
        z, x1, frame_mask = sample(batch, key)
        decoder = nnx.merge(dec_graph, params, dec_rest)
        return decoder(z, frame_mask), decoder(x1, frame_mask), jnp.sum(frame_mask, axis=1) * hop

    held_out = []
    for i, batch in enumerate(batches(config, args.split, training=False)):
        if i == args.eval_batches:
            break
        held_out.append(batch)

    def score(params) -> dict:
        rows = {"generated": [], "resynthesis": []}
        for i, batch in enumerate(held_out):
            gen, resyn, n = jax.device_get(decode_both(params, batch, jax.random.key(1000 + i)))
            audio, alen = np.asarray(batch["audio"]), np.asarray(batch["audio_len"])
            for b in range(audio.shape[0]):
                m = int(min(n[b], alen[b]))
                if m < sr // 2:
                    continue
                for name, wav in (("generated", gen), ("resynthesis", resyn)):
                    agree = voicing.voicing_agreement(audio[b, :m], wav[b, :m], sr)
                    mel = float(gan_losses.multiscale_mel_loss(jnp.asarray(audio[None, b, :m]),
                                                               jnp.asarray(wav[None, b, :m]), sr))
                    if agree["voiced_fraction_reference"] >= 0.05:
                        rows[name].append((agree["voiced_recall"], agree["pitch_recall"], mel))
        return {k: np.mean(v, axis=0) for k, v in rows.items()}

    def report(label, s):
        print(f"{label:>12s}  " + "  ".join(f"{k}: voiced {v[0]:.3f} pitch {v[1]:.3f} mel {v[2]:.3f}"
                                            for k, v in s.items()), flush=True)

    report("before", score(start_params))
    params, opt = dec_params, tx.init(dec_params)
    key = jax.random.key(args.seed)
    t0, step = time.time(), 0
    while step < args.steps:
        for batch in batches(config, "train", training=True):
            params, opt, loss, mel = train_step(params, opt, batch, jax.random.fold_in(key, step))
            step += 1
            if step % 25 == 0:
                print(f"step {step}: loss {float(loss):.3f} mel {float(mel):.3f} ({time.time() - t0:.0f} s)",
                      flush=True)
            if step == args.steps:
                break
    report(f"after {step}", score(params))


if __name__ == "__main__":
    main()
