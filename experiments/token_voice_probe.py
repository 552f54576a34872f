"""How much of the voice do the audio tokens carry? The same sentence read by two voices should give nearly
the same tokens if the tokens hold the words and not the voice.

For every sentence that several speakers of a split read, the normalised token edit distance between each
pair of readings, against pairs of different sentences (the floor a voice-bound code would sit near):

  python experiments/token_voice_probe.py --data-dir D/data --extracted D/data/espeak_tts/small/1.0.0/extracted/default
      [--name espeak_tts/small] [--split validation]

A tokenizer whose decoder sees the voice (`model.decoder_voice`) lowers the first number
(docs/what_limits_quality.md).
"""
from __future__ import annotations

import argparse
import collections
import itertools

import numpy as np

from data_pipelines.extracted import ExtractedSource
from data_pipelines.sources import open_source
from speech_jax.eval.cer import edit_distance


def normalised_distance(a, b) -> float:
    return edit_distance(a, b) / max(len(a), len(b), 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--extracted", required=True, help="the extraction's directory (speech-jax extract --tag)")
    ap.add_argument("--name", default="espeak_tts/small")
    ap.add_argument("--split", default="validation")
    ap.add_argument("--pairs", type=int, default=300, help="pairs of different sentences sampled")
    args = ap.parse_args()

    corpus = open_source(args.name, args.data_dir, args.split)
    tokens = ExtractedSource(args.extracted, args.split)
    readings = collections.defaultdict(list)  # text -> token sequences, one per reading
    for i in range(len(corpus)):
        readings[corpus[i]["text"]].append(np.asarray(tokens[i]["tokens"]).ravel().tolist())
    same = [normalised_distance(a, b) for seqs in readings.values() for a, b in itertools.combinations(seqs, 2)]
    if not same:
        raise SystemExit(f"no sentence of {args.split} is read by two speakers")
    texts = list(readings)
    rng = np.random.RandomState(0)
    other = [normalised_distance(readings[texts[i]][0], readings[texts[j]][0])
             for i, j in (rng.choice(len(texts), 2, replace=False) for _ in range(args.pairs))]
    print(f"same sentence, two voices: {np.mean(same):.3f} ({len(same)} pairs); "
          f"different sentences: {np.mean(other):.3f} ({len(other)} pairs)")


if __name__ == "__main__":
    main()
