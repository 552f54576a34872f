"""Does a style adapter move speaking rate and pitch range the intended way on unseen speakers?

For `--limit` test_unseen lines of the neutral corpus (each: another utterance of the same unseen speaker as
the reference, zero-shot), synthesises with the base AR and with each style stage in its place, and measures
- duration ratio: the output's length over espeak's neutral rendering of the same line (rate: < 1 is faster);
- pitch range: the 10th-90th percentile spread of pYIN's F0 over voiced frames, in semitones.
espeak's own renderings of the lines in each style (the style corpora's test_unseen) are the targets.

    python experiments/style/measure.py --tokenizer T --ar A --flow-matching F --data-dir D \
        --style lively=W1 --style calm=W2 [--limit 16]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import librosa
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from data_pipelines.sources import _str, open_source  # noqa: E402
from speech_jax.eval.voicing import FMAX, FMIN  # noqa: E402


def pitch_range(wav: np.ndarray, sr: int) -> float:
    """Semitones between the 10th and 90th percentile of F0 over voiced frames (nan: under 5 voiced)."""
    hop = sr // 50
    f0, voiced, _ = librosa.pyin(np.asarray(wav, np.float32), fmin=FMIN, fmax=FMAX, sr=sr,
                                 frame_length=4 * hop, hop_length=hop)
    f0 = f0[voiced & np.isfinite(f0)]
    if f0.size < 5:
        return float("nan")
    lo, hi = np.percentile(f0, [10, 90])
    return float(12 * np.log2(hi / lo))


def lines(data_dir: str, corpus: str, limit: int):
    """(target record, reference record) pairs over the unseen speakers, round robin."""
    source = open_source(corpus, data_dir, "test_unseen")
    by_speaker = collections.defaultdict(list)
    for i in range(len(source)):
        by_speaker[_str(source[i]["speaker"])].append(i)
    pairs = [(source[utts[k]], source[utts[(k + 1) % len(utts)]])
             for k in range(max(len(u) for u in by_speaker.values()))
             for _, utts in sorted(by_speaker.items()) if k < len(utts) and len(utts) > 1]
    return pairs[:limit]


def by_utt_id(source) -> dict:
    return {_str(r["utt_id"]): r for r in (source[i] for i in range(len(source)))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--ar", required=True, help="the base AR stage")
    p.add_argument("--flow-matching", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--corpus", default="espeak_tts/small", help="the neutral corpus")
    p.add_argument("--style", action="append", default=[], metavar="NAME=WORKDIR",
                   help="a style stage; NAME is also its espeak_tts corpus (lively, calm)")
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--out", default=None, help="write the table's numbers as JSON here")
    args = p.parse_args(argv)
    from speech_jax.infer.synthesizer import Synthesizer
    styles = dict(s.split("=", 1) for s in args.style)
    pairs = lines(args.data_dir, args.corpus, args.limit)
    targets = {name: by_utt_id(open_source(f"espeak_tts/{name}", args.data_dir, "test_unseen")) for name in styles}
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for target, _ in pairs:  # espeak's own renderings: neutral and each style
        neutral = np.asarray(target["audio"], np.float32) / 32768
        sr = int(target["sample_rate"])
        rows["espeak neutral"]["duration_ratio"].append(1.0)
        rows["espeak neutral"]["pitch_range"].append(pitch_range(neutral, sr))
        for name in styles:
            styled = np.asarray(targets[name][_str(target["utt_id"])]["audio"], np.float32) / 32768
            rows[f"espeak {name}"]["duration_ratio"].append(styled.size / neutral.size)
            rows[f"espeak {name}"]["pitch_range"].append(pitch_range(styled, sr))
    for system, ar in (("base AR", args.ar), *((f"{n} adapter", w) for n, w in styles.items())):
        synth = Synthesizer.from_workdirs(args.tokenizer, ar, args.flow_matching)
        for k, (target, reference) in enumerate(pairs):
            ref = np.asarray(reference["audio"], np.float32) / 32768
            lang = _str(target["language"]) if synth.needs_language else None
            wav = synth.synthesize(_str(target["text"]), ref, reference_sample_rate=int(reference["sample_rate"]),
                                   language=lang, seed=k)
            rows[system]["duration_ratio"].append(wav.size / synth.sample_rate
                                                  / (len(target["audio"]) / int(target["sample_rate"])))
            rows[system]["pitch_range"].append(pitch_range(wav, synth.sample_rate))
        print(f"{system}: {len(pairs)} lines", file=sys.stderr)
    table = {s: {k: float(np.nanmean(v)) for k, v in m.items()} for s, m in rows.items()}
    print(f"{len(pairs)} test_unseen lines (zero-shot, neutral references)\n")
    print("| system | duration / espeak neutral | pitch range (semitones, F0 p10-p90) |\n|---|---|---|")
    for s, m in table.items():
        print(f"| {s} | {m['duration_ratio']:.3f} | {m['pitch_range']:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(table, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
