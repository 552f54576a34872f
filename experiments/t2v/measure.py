"""Do voices generated from descriptions follow them, and differ from each other?

For every description of a grid (pitch low/high × pace slow/fast × gender male/female, English), samples
`--seeds` voices with the t2v stage and measures
- in the speaker space: whether a linear probe (fitted on the training speakers' utterance vectors) reads
  the described gender, pitch side, pace side and language from each voice, against the same probe on the
  unseen speakers' own recordings and the majority class; and how far apart voices are (cosine distance)
  from the same description and across them;
- in audio: `--lines` English test_unseen lines synthesised in each voice; median F0 (pYIN, voiced frames)
  and seconds per line, grouped by what the description says. The corpus's own speakers grouped the same
  way give the target contrast (espeak's pitch and rate settings).

    python experiments/t2v/measure.py --t2v W --tokenizer T --ar A --flow-matching F --data-dir D
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from data_pipelines.sources import _str, open_source  # noqa: E402
from speech_jax.eval.voicing import median_f0 as voiced_median_f0  # noqa: E402
from speech_jax.text.voice_description import speaker_attributes  # noqa: E402

GRID = [dict(pitch=p, pace=r, gender=g) for p, r, g in itertools.product(("low", "high"), ("slow", "fast"),
                                                                          ("male", "female"))]
SIDES = {"pitch": {"very low": "low", "low": "low", "high": "high", "very high": "high"},
         "pace": {"very slow": "slow", "slow": "slow", "fast": "fast", "very fast": "fast"}}


def median_f0(wav: np.ndarray, sr: int) -> float:
    """speech_jax.eval.voicing's median F0, NaN where too little is voiced to read one (tables use nanmean)."""
    f0 = voiced_median_f0(wav, sr)
    return float("nan") if f0 is None else f0


def wording(d: dict) -> str:
    return f"a {d['pitch']} pitched {d['gender']} voice, speaking {d['pace']}, in english"


def side(attrs, key: str) -> str | None:
    return SIDES[key].get(getattr(attrs, key)) if key in SIDES else getattr(attrs, key)


def utterance_vectors(ar, data_dir: str, corpus: str, split: str, sample_rate: int, per_speaker: int):
    """Speaker vectors [N, spk_dim] of up to `per_speaker` utterances of each speaker of `split`, their
    speakers [N], and {speaker: their audio}."""
    from speech_jax.audio.io import resample
    from speech_jax.train.tasks.pvc import speaker_vectors_of
    source = open_source(corpus, data_dir, split)
    audio = collections.defaultdict(list)
    for i in range(len(source)):
        r = source[i]
        s = _str(r["speaker"])
        if len(audio[s]) < per_speaker:
            audio[s].append(resample(np.asarray(r["audio"], np.float32) / 32768, int(r["sample_rate"]), sample_rate))
    speakers = [s for s, a in sorted(audio.items()) for _ in a]
    return speaker_vectors_of(ar, [w for _, a in sorted(audio.items()) for w in a]), speakers, audio


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cosine_distances(a: np.ndarray) -> np.ndarray:
    a = unit(a)
    return 1 - a @ a.T


def audio_rows(args, voices: dict, names: list[str], attrs: dict, audio: dict) -> tuple[dict, dict]:
    """Median F0 and seconds per line of the voices' synthesis, grouped by each described value; the
    median F0 of the corpus's training speakers grouped the same way (every language: espeak's pitch
    setting does not depend on it)."""
    from speech_jax.infer.synthesizer import Synthesizer
    synth = Synthesizer.from_workdirs(args.tokenizer, args.ar, args.flow_matching)
    sr = synth.sample_rate
    test = open_source(args.corpus, args.data_dir, "test_unseen")
    texts = [_str(r["text"]) for r in (test[i] for i in range(len(test))) if _str(r["language"]) == "en"][:args.lines]
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for d in GRID:
        for v in voices[wording(d)]:
            for k, text in enumerate(texts):
                wav = synth.synthesize(text, voice=v, language="en" if synth.needs_language else None, seed=k)
                for key in ("pitch", "pace", "gender"):
                    rows[f"{key}={d[key]}"]["f0"].append(median_f0(wav, sr))
                    rows[f"{key}={d[key]}"]["seconds"].append(wav.size / sr)
        print(f"synthesised {wording(d)!r}", file=sys.stderr)
    corpus = collections.defaultdict(lambda: collections.defaultdict(list))
    for s in names:
        for key in ("pitch", "pace", "gender"):
            if side(attrs[s], key) is not None:
                corpus[f"{key}={side(attrs[s], key)}"]["f0"].extend(median_f0(w, sr) for w in audio[s][:2])
    mean = lambda table: {k: {m: float(np.nanmean(x)) for m, x in v.items()} for k, v in sorted(table.items())}  # noqa: E731
    return mean(rows), mean(corpus)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--t2v", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--ar", required=True)
    p.add_argument("--flow-matching", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--corpus", default="espeak_tts/small")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--lines", type=int, default=3, help="English lines per voice (0: the speaker space only)")
    p.add_argument("--per-speaker", type=int, default=12, help="utterances per speaker for the probe")
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)
    from speech_jax.t2v import load_t2v, voice_from_description
    from speech_jax.train.restore import load_model

    model = load_t2v(args.t2v)
    voices = {wording(d): [voice_from_description(args.t2v, wording(d), seed=s, model=model).v
                           for s in range(args.seeds)] for d in GRID}
    _, ar = load_model(args.ar, "ar")
    sample_rate = model[0].data.sample_rate
    train_v, train_s, audio = utterance_vectors(ar, args.data_dir, args.corpus, "train", sample_rate, args.per_speaker)
    test_v, test_s, _ = utterance_vectors(ar, args.data_dir, args.corpus, "test_unseen", sample_rate, args.per_speaker)
    names = sorted(set(train_s))
    attrs = {s: speaker_attributes(s) for s in set(train_s) | set(test_s)}
    out = {"agreement": {}, "probe_on_unseen_speakers": {}, "majority": {}, "audio": {}, "corpus": {}}
    for key in ("gender", "pitch", "pace", "language"):
        # A linear probe reads the attribute from the speaker space (fitted on the training speakers'
        # utterances); the generated voices agree with their description if it reads the described value.
        labels = np.array([side(attrs[s], key) for s in train_s], object)
        keep = labels != None  # noqa: E711  (medium pitch, moderate pace: neither side)
        probe = LogisticRegression(max_iter=2000).fit(unit(train_v[keep]), labels[keep].astype(str))
        wanted = [d.get(key, "english") for d in GRID for _ in range(args.seeds)]
        out["agreement"][key] = float(np.mean(probe.predict(unit(np.stack(
            [v for d in GRID for v in voices[wording(d)]]))) == np.array(wanted)))
        test_labels = np.array([side(attrs[s], key) for s in test_s], object)
        tk = test_labels != None  # noqa: E711
        out["probe_on_unseen_speakers"][key] = float(np.mean(probe.predict(unit(test_v[tk])) == test_labels[tk]))
        values, counts = np.unique(labels[keep].astype(str), return_counts=True)
        out["majority"][key] = float(counts.max() / counts.sum())
    means = np.stack([unit(train_v[np.array(train_s) == s]).mean(0) for s in names])
    all_v = np.stack([v for vs in voices.values() for v in vs])
    dist = cosine_distances(all_v)
    group = np.repeat(np.arange(len(GRID)), args.seeds)
    same = group[:, None] == group[None]
    off_diag = ~np.eye(len(all_v), dtype=bool)
    out["distance"] = dict(same_description=float(dist[same & off_diag].mean()),
                           other_description=float(dist[~same].mean()),
                           training_speakers=float(cosine_distances(means)[~np.eye(len(names), dtype=bool)].mean()))
    print(json.dumps({k: out[k] for k in ("agreement", "probe_on_unseen_speakers", "majority", "distance")},
                     indent=1), file=sys.stderr)

    if args.lines > 0:
        out["audio"], out["corpus"] = audio_rows(args, voices, names, attrs, audio)
    print(f"{len(GRID)} descriptions × {args.seeds} seeds; a linear probe of the speaker space (fitted on the "
          f"training speakers) reads the described value:")
    print("| attribute | generated voices | unseen speakers' own recordings | majority class |\n|---|---|---|---|")
    for key in out["agreement"]:
        print(f"| {key} | {out['agreement'][key]:.2f} | {out['probe_on_unseen_speakers'][key]:.2f} | "
              f"{out['majority'][key]:.2f} |")
    print(f"\ncosine distance: same description {out['distance']['same_description']:.3f}, other descriptions "
          f"{out['distance']['other_description']:.3f}, training speakers {out['distance']['training_speakers']:.3f}")
    if not out["audio"]:
        return 0
    print(f"\n{args.lines} English test_unseen lines in every voice:")
    print("| described | median F0 (Hz) | seconds / line | espeak speakers so described: median F0 |\n|---|---|---|---|")
    for k, m in out["audio"].items():
        target = out["corpus"].get(k, {}).get("f0", float("nan"))
        print(f"| {k} | {m['f0']:.1f} | {m['seconds']:.2f} | {target:.1f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
