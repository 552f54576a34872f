"""How far from its encoder's means can a Flow-VAE's decoder be driven and still voice? Flow matching samples
latents that differ from the posterior means of the same audio (by about 0.65 of the latent's spread on the
long recipe's system), so a decoder that voices only on its encoder's means voices little of what flow matching
makes (docs/what_limits_quality.md, "The chain's rungs").

For `test_unseen` utterances re-rendered by espeak, each workdir's decoder reads the posterior means plus
Gaussian noise of `--noise` times the latent's per-dimension spread; per level: the voiced-frame recall of the
ground truth's voiced frames (pYIN) and the share of those within a semitone of its F0. First the posterior
σ as a share of the spread (the noise the decoder trained on).

    python experiments/flow_vae/latent_noise.py --flow-vae W1 --flow-vae W2 --data-dir D [--limit 8]
        [--noise 0,0.25,0.5,1]
"""
from __future__ import annotations

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from speech_jax.eval import seed_tts, voicing
from speech_jax.train.restore import load_model, read_config


def rows(workdir: str, truths: list, noise: list[float], seed: int) -> dict:
    config, model = load_model(workdir, "flow_vae")
    vae = model.generator
    hop = vae.hop
    samples = hop * -(-max(t.size for t in truths) // hop)
    encode, decode = jax.jit(vae.encode), jax.jit(vae.decode)
    out = {"sigma/spread": [], **{s: [] for s in noise}}
    for i, truth in enumerate(truths):
        audio = np.zeros((1, samples), np.float32)
        audio[0, :truth.size] = truth
        mean, log_std, mask = encode(jnp.asarray(audio), jnp.asarray([truth.size], jnp.int32))
        m = np.asarray(mask)[0]
        valid = np.asarray(mean)[0][m]
        spread = valid.std(0)
        out["sigma/spread"].append(float((np.exp(np.asarray(log_std)[0][m]).mean(0) / spread).mean()))
        for s in noise:
            eps = np.asarray(jax.random.normal(jax.random.key(seed + i), mean.shape))
            z = np.asarray(mean) + s * spread * eps * m[None, :, None]
            wav = np.asarray(decode(jnp.asarray(z, jnp.float32), mask))[0, :truth.size]
            agree = voicing.voicing_agreement(truth, wav, config.data.sample_rate)
            if agree["voiced_fraction_reference"] < 0.05:  # whispering voices: nothing voiced to recall
                agree = dict(voiced_recall=np.nan, pitch_recall=np.nan)
            out[s].append((agree["voiced_recall"], agree["pitch_recall"]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow-vae", action="append", required=True, help="a flow_vae workdir (repeatable)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--name", default="espeak_tts/small")
    p.add_argument("--split", default="test_unseen")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--noise", default="0,0.25,0.5,1", help="noise levels, in units of the latent's spread")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    noise = [float(s) for s in args.noise.split(",")]
    sample_rate = None
    print(f"{'workdir':40s} {'σ/spread':>8s} " + " ".join(f"{'noise ' + format(s, 'g'):>17s}" for s in noise))
    print(f"{'':40s} {'':8s} " + " ".join(f"{'voiced / pitch':>17s}" for _ in noise))
    with tempfile.TemporaryDirectory() as tmp:
        lines = seed_tts.read_meta(seed_tts.make_meta_from_corpus(args.data_dir, args.name, args.split,
                                                                  out_dir=tmp, n=args.limit))
        for workdir in args.flow_vae:
            rate = int(read_config(workdir).data.sample_rate)
            if rate != sample_rate:
                truth = seed_tts.espeak_ground_truth(rate)
                truths = [truth(line.utt, line.target_text)[0] for line in lines]
                sample_rate = rate
            r = rows(workdir, truths, noise, args.seed)
            cells = [f"{np.nanmean([v for v, _ in r[s]]):8.2f} {np.nanmean([q for _, q in r[s]]):8.2f}" for s in noise]
            print(f"{workdir[-40:]:40s} {np.mean(r['sigma/spread']):8.3f} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
