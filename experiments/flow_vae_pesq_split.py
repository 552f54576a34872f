"""Where the Flow-VAE's resynthesis loses PESQ: in its magnitudes or in its phases.

On whole utterances of a split (not the training crops), PESQ-WB of the resynthesis from the encoder's means,
and of signals that take one half of their STFT (n_fft, hop n_fft / 4) from the resynthesis and the other from
the original:

  resynthesis              the decoder's output
  magnitude | true phase   the decoder's magnitudes: what they allow with a perfect phase
  true magnitude | phase   the decoder's phases: what they allow with perfect magnitudes
  true magnitude | GL      the original's magnitudes with a phase Griffin-Lim recovers from them alone: what a
                           spectrogram at that resolution allows without phase

  python experiments/flow_vae_pesq_split.py --workdir W [--split validation] [--seconds 8] [--ffts 512,1280]
"""
from __future__ import annotations

import argparse

import librosa
import numpy as np

from speech_jax import sharding
from speech_jax.eval.resynthesis import pesq_wb
from speech_jax.train.eval_fetch import fetch
from speech_jax.train.restore import read_config
from speech_jax.train.validate import restored_trainer


def resynthesised(workdir: str, split: str, seconds: float) -> tuple[list, list, int]:
    """(originals, resyntheses, sample rate): the first eval batch of `split`, utterances up to `seconds` whole."""
    config = read_config(workdir)
    config.data.max_seconds = seconds
    config.data.buckets_seconds = (seconds,)
    trainer, _, state = restored_trainer(config, workdir)
    batch = next(iter(trainer.dataset(split, training=False)))
    with sharding.activation_rules(trainer.mesh, trainer.rules):
        out, labels = trainer.eval_step(state, trainer.to_device(batch))
    out, labels = fetch(out, labels, arrays=True)
    lengths = np.asarray(labels["audio_len"])
    wavs = [(np.asarray(out["wav"][i, :n]), np.asarray(out["wav_hat"][i, :n])) for i, n in enumerate(lengths) if n]
    return [w for w, _ in wavs], [w for _, w in wavs], int(config.data.sample_rate)


def split_scores(ref: np.ndarray, est: np.ndarray, sample_rate: int, n_fft: int) -> dict:
    hop, n = n_fft // 4, len(ref)
    stft = lambda x: librosa.stft(x, n_fft=n_fft, hop_length=hop)
    istft = lambda s: librosa.istft(s, hop_length=hop, length=n)
    r, e = stft(ref), stft(est)
    recovered = librosa.griffinlim(np.abs(r), n_iter=64, n_fft=n_fft, hop_length=hop, length=n, random_state=0)
    return {f"magnitude | true phase @{n_fft}": pesq_wb(ref, istft(np.abs(e) * np.exp(1j * np.angle(r))), sample_rate),
            f"true magnitude | phase @{n_fft}": pesq_wb(ref, istft(np.abs(r) * np.exp(1j * np.angle(e))), sample_rate),
            f"true magnitude | GL @{n_fft}": pesq_wb(ref, recovered, sample_rate)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="a trained Flow-VAE stage")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--seconds", type=float, default=8.0, help="utterances up to this long are scored whole")
    ap.add_argument("--ffts", default="512,1280", help="STFT sizes of the split, comma separated")
    args = ap.parse_args()
    refs, ests, sample_rate = resynthesised(args.workdir, args.split, args.seconds)
    rows = []
    for ref, est in zip(refs, ests):
        row = {"resynthesis": pesq_wb(ref, est, sample_rate)}
        for n_fft in (int(f) for f in args.ffts.split(",")):
            row.update(split_scores(ref, est, sample_rate, n_fft))
        rows.append(row)
    print(f"{len(rows)} utterances of {args.split}, PESQ-WB (mean over those it scores):")
    for key in rows[0]:
        print(f"  {key:30s} {np.nanmean([r[key] for r in rows]):.2f}")


if __name__ == "__main__":
    main()
