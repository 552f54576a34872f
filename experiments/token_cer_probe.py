"""Are the AR's tokens words? The tokenizer's own CTC head reads token sequences back as text units, so the
words an AR stage says can be scored without flow matching, the Flow-VAE or the judge:

- `audio tokens`: the tokens of espeak's own audio of each line (what the tokens can hold at best);
- `AR tokens`: the AR's zero-shot tokens for the same line, the reference another utterance of the same
  speaker (as `evaluate` pairs them); sampled as synthesis samples (top-k 25, top-p 0.8) and greedy.

Each is the CTC greedy transcript's character error rate against the line's, in the tokenizer's text units.
The gap between the two rows is what the AR loses; docs/what_limits_quality.md compares stages with it.

  python experiments/token_cer_probe.py --tokenizer T --ar A [--split test_unseen] [--limit 48] [--data-dir D]
"""
from __future__ import annotations

import argparse
import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines.sources import _str, open_source
from speech_jax.eval.cer import ctc_collapse, edit_distance
from speech_jax.infer.ar_decode import generate
from speech_jax.models.ar_layout import build_prefix
from speech_jax.models.audio_tokenizer import encode
from speech_jax.text import units
from speech_jax.train.restore import load_model


def pad(rows: list[np.ndarray], length: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(rows), length), dtype)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r[:length]
    return out, np.asarray([min(len(r), length) for r in rows], np.int32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="a trained tokenizer stage (its CTC head reads tokens)")
    ap.add_argument("--ar", required=True, help="a trained ar stage on that tokenizer's tokens")
    ap.add_argument("--ar-step", type=int, default=None, help="default: the AR's newest checkpoint")
    ap.add_argument("--split", default="test_unseen")
    ap.add_argument("--data-dir", default=None, help="default: the AR stage's data.data_dir")
    ap.add_argument("--limit", type=int, default=48, help="lines scored")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tok_cfg, tok = load_model(args.tokenizer, "tokenizer")
    ar_cfg, ar = load_model(args.ar, "ar", args.ar_step)
    if int(tok_cfg.model.codebook_size) != int(ar_cfg.model.codebook_size):
        raise SystemExit("the AR was not trained on this tokenizer's codebook")
    tok_units, ar_units = units.from_config(tok_cfg.data), units.from_config(ar_cfg.data)
    source = open_source(ar_cfg.data.name, args.data_dir or ar_cfg.data.data_dir, args.split)
    records = [source[i] for i in range(len(source))]
    by_speaker = collections.defaultdict(list)
    for i, r in enumerate(records):
        by_speaker[_str(r["speaker"])].append(i)
    # Each line's reference: the next utterance of its speaker (another recording of the same voice).
    lines = [i for i in range(len(records)) if len(by_speaker[_str(records[i]["speaker"])]) > 1][:args.limit]

    sr, hop = int(ar_cfg.data.sample_rate), int(ar_cfg.mel.hop_length)
    max_audio = int(float(ar_cfg.data.max_seconds) * sr)
    max_new = math.ceil(max_audio / (2 * hop))
    text_len_max = int(ar_cfg.data.max_text_len)
    min_ratio, max_ratio = ar_units.token_ratios
    audio_of = lambda r: r["audio"].astype(np.float32) / 32768.0  # noqa: E731

    @jax.jit
    def audio_tokens(audio, audio_len):
        return encode(tok, audio, audio_len)

    @jax.jit
    def ctc_ids(ids, mask):
        logits, ctc_mask = tok.ctc_logits(tok.vq.lookup(jnp.maximum(ids, 0)), mask)
        return jnp.argmax(logits, -1), ctc_mask.sum(1)

    graphdef, state = nnx.split(ar)

    def ar_tokens(state, text, text_len, ref, ref_len, rng, greedy):
        model, b = nnx.merge(graphdef, state), text.shape[0]
        prefix = build_prefix(text, text_len, jnp.zeros((b, 1), jnp.int32), jnp.zeros((b,), jnp.int32),
                              jnp.zeros((b, 1), jnp.int32), jnp.zeros((b,), jnp.int32),
                              codebook_size=model.codebook_size, use_speaker=model.speaker != "none")
        return generate(graphdef, state, prefix, model.speaker_embedding(ref, ref_len), rng, max_new_tokens=max_new,
                        greedy=greedy, min_ratio=float(min_ratio), max_ratio=float(max_ratio))

    ar_tokens = jax.jit(ar_tokens, static_argnames="greedy")
    errors, total = collections.Counter(), 0
    for start in range(0, len(lines), args.batch):
        chunk = lines[start:start + args.batch]
        recs = [records[i] for i in chunk]
        speakers = [by_speaker[_str(r["speaker"])] for r in recs]
        refs = [records[s[(s.index(i) + 1) % len(s)]] for i, s in zip(chunk, speakers)]
        langs = [_str(r["language"]) for r in recs]
        texts = [_str(r["text"]) for r in recs]
        audio, audio_len = pad([audio_of(r) for r in recs], max_audio, np.float32)
        ref, ref_len = pad([audio_of(r) for r in refs], max_audio, np.float32)
        text, text_len = pad([np.asarray(ar_units.encode(t, lang), np.int32) for t, lang in zip(texts, langs)],
                             text_len_max, np.int32)
        ids, mask = audio_tokens(audio, audio_len)
        sequences = {"audio tokens": (ids, mask)}
        for name, greedy in (("AR tokens, sampled", False), ("AR tokens, greedy", True)):
            gen, lengths = ar_tokens(state, text, text_len, ref, ref_len, jax.random.key(args.seed + start), greedy)
            sequences[name] = (gen, jnp.arange(gen.shape[1])[None] < lengths[:, None])
        for name, (seq, valid) in sequences.items():
            pred, pred_len = jax.device_get(ctc_ids(seq, valid))
            for p, n, t, lang in zip(pred, pred_len, texts, langs):
                hyp = tok_units.decode(ctc_collapse(p[:n]))
                ref_text = tok_units.decode(tok_units.encode(t, lang))
                errors[name] += edit_distance(list(hyp), list(ref_text))
        total += sum(len(tok_units.decode(tok_units.encode(t, lang))) for t, lang in zip(texts, langs))
    print(f"{args.split}, {len(lines)} lines: CTC CER of the tokenizer's head over")
    for name, e in errors.items():
        print(f"  {name:20s} {e / max(total, 1):.3f}")


if __name__ == "__main__":
    main()
