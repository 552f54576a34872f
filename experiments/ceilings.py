"""Which stage limits intelligibility? The judge's CER at each rung of the synthesis chain.

For unseen-speaker utterances of a prepared corpus, each rung replaces one more stage's input by what the
models themselves make, so the first rung whose CER jumps is the stage that holds the output back:

  ground_truth   espeak's own audio of the target sentence
  flow_vae       ground truth -> Flow-VAE encode -> decode                       (the decoder's ceiling)
  tokens         ground truth -> tokenizer -> flow matching (speaker vector of another utterance of the
                 speaker) -> Flow-VAE decode                                     (the tokens' ceiling)
  tts@STEP       text -> AR at that step (zero-shot) -> flow matching -> Flow-VAE decode (the system)

  python experiments/ceilings.py --workdirs DEMO/workdirs --data-dir DEMO/data [--judge W] \
      [--name espeak_tts/small] [--limit 12] [--ar W] [--flow-matching W] [--ar-steps 1000,2000]
      [--fm-steps 10,32] [--cfg-weights 0,0.7,2] [--fm-temperatures 1,0.5] [--candidates 1,4]
      [--skip-resynthesis | --skip-system] [--split test_unseen] [--by-voice]

`--workdirs` holds the stage workdirs (tokenizer, ar, flow_matching, judge); `--ar` and `--flow-matching`
other workdirs of those stages trained on the same tokens (each carries its own speaker encoder);
`--ar-steps` scores the system at those AR checkpoints (a learning curve in the judge's CER), default the
latest; `--temperatures 1,0.7` samples the AR at each, `--candidates 1,4` as the best of that many AR
samples (the tokenizer's CTC head picks), `--ctc-guidance 0.5` under CTC guidance; `--fm-steps` ×
`--cfg-weights` × `--fm-temperatures` (the scale of flow matching's starting noise, the synthesizer's
`fm_temperature`) repeat the tokens rung for each flow-matching sampler setting, and the system rows for each
temperature. Prints one row per rung: judge CER, pYIN's voiced-frame fraction relative to the ground truth's, and
the duration relative to the ground truth's; `--by-voice` then each resynthesis rung's voiced fraction and
median F0 per voice (the lines' speakers).
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile

import jax
import numpy as np

from speech_jax.eval import seed_tts, voicing
from speech_jax.eval.judge import JudgeTranscriber
from speech_jax.infer.backend import ProgramBackend, jit_programs
from speech_jax.infer.synthesizer import FM_TEMPERATURE, TEMPERATURE, Synthesizer, load_stages
from speech_jax.train.restore import read_config
from speech_jax.text import units


def _padded(wav: np.ndarray, samples: int):
    audio = np.zeros((1, samples), np.float32)
    n = min(wav.size, samples)
    audio[0, :n] = wav[:n]
    return audio, np.asarray([n], np.int32)


def resynthesis_rungs(workdirs: dict, lines, targets, *, seed=0, cfg_weight=0.7, fm_steps=10,
                      fm_temperature=1.0) -> dict:
    """{"flow_vae": [wav], "tokens": [wav]} for the ground-truth `targets` (one per meta line)."""
    templates, weights, spec, text_units, _ = load_stages(workdirs["tokenizer"], workdirs["ar"],
                                                          workdirs["flow_matching"])
    # One bucket long enough for every target: the programs read whole utterances, no generation.
    whole = spec.replace(prompt_tokens=math.ceil(max(t.size for t in targets) / (2 * spec.hop)),
                         max_new_tokens=0, fm_steps=fm_steps)
    backend = ProgramBackend(whole, weights, jit_programs(templates))
    reference = Synthesizer(backend, text_units)
    out = {"flow_vae": [], "tokens": []}
    key = jax.random.key(seed)
    for i, (line, target) in enumerate(zip(lines, targets)):
        audio, length = _padded(target, whole.ref_samples)
        n = int(length[0])
        frame_mask = np.arange(whole.frames)[None] < -(-n // spec.hop)
        out["flow_vae"].append(backend.vae_decode(backend.vae_encode(audio, length), frame_mask)[0, :n])
        tokens, token_mask = backend.tokenize(audio, length)
        frames = 2 * int(token_mask.sum())
        frame_mask = np.arange(whole.frames)[None] < frames
        _, fm_spk = backend.speaker(*_padded(reference.load_reference(line.prompt_wav), whole.ref_samples))
        x0 = fm_temperature * np.asarray(jax.random.normal(jax.random.fold_in(key, i),
                                                           (1, whole.frames, whole.latent_dim)))
        no_prompt = np.zeros((1, whole.frames, whole.latent_dim), np.float32)
        z = backend.fm_sample(x0, np.where(token_mask, tokens, 0), frame_mask, fm_spk, no_prompt,
                              np.zeros((1, whole.frames), bool), np.float32(cfg_weight))
        out["tokens"].append(backend.vae_decode(z, frame_mask)[0, :frames * spec.hop])
    return out


def tts_rung(workdirs: dict, lines, ar_step: int | None, *, seed=0, cfg_weight=0.7, fm_steps=10,
             temperature=TEMPERATURE, candidates=1, ctc_guidance=0.0, fm_temperature=FM_TEMPERATURE) -> list:
    """Zero-shot synthesis of every line with the AR checkpoint at `ar_step` (None: the latest), best of
    `candidates` AR samples, under CTC guidance of that weight (0: none), flow matching from that noise scale."""
    steps = None if ar_step is None else {"ar": ar_step}
    templates, weights, spec, text_units, configs = load_stages(workdirs["tokenizer"], workdirs["ar"],
                                                                workdirs["flow_matching"], steps=steps)
    synth = Synthesizer(ProgramBackend(spec, weights, jit_programs(templates)), text_units,
                        score_units=units.from_config(configs["tokenizer"].data))
    return [synth.synthesize(line.target_text, line.prompt_wav, language=seed_tts.corpus_language(line.utt),
                             seed=seed + i, cfg_weight=cfg_weight, fm_steps=fm_steps, temperature=temperature,
                             candidates=candidates, ctc_guidance=ctc_guidance, fm_temperature=fm_temperature,
                             acoustic_prompt=False)  # as the tokens rung: speaker vectors
            for i, line in enumerate(lines)]


def score(judge: JudgeTranscriber | None, lines, wavs, truths, sample_rate: int) -> tuple[float, float, float]:
    """(mean judge CER, mean voiced-frame fraction relative to the ground truth's, mean duration ratio)."""
    cers, voiced, durations = [], [], []
    for line, wav, truth in zip(lines, wavs, truths):
        language = seed_tts.corpus_language(line.utt)
        durations.append(wav.size / truth.size)
        cers.append(judge.cer(judge.transcribe(wav, sample_rate), line.target_text, language) if judge else np.nan)
        truth_voiced = voicing.voiced_fraction(truth, sample_rate)
        if truth_voiced > 0.05:  # whispering voices have no voiced frames to compare
            voiced.append(voicing.voiced_fraction(wav, sample_rate) / truth_voiced)
    return float(np.mean(cers)), float(np.mean(voiced)), float(np.mean(durations))


def by_voice(lines, rows: dict, sample_rate: int) -> list[str]:
    """Per voice (the speaker of each line), each rung's mean voiced-frame fraction and the median of its lines'
    F0s (pYIN; "-" where no line had a pitch to read): which voices a rung leaves unvoiced, or at another pitch."""
    voices = sorted({line.utt.split("/")[0] for line in lines})
    summaries = {rung: [voicing.voicing_summary(w, sample_rate) for w in wavs] for rung, wavs in rows.items()}
    out = [f"{'voice':26s} " + " ".join(f"{rung[:21]:>21s}" for rung in rows)]
    for voice in voices:
        cells = []
        for rung in rows:
            mine = [s for line, s in zip(lines, summaries[rung]) if line.utt.split("/")[0] == voice]
            f0s = [f0 for _, f0 in mine if f0 is not None]
            f0 = f"{np.median(f0s):4.0f} Hz" if f0s else "   - Hz"
            cells.append(f"{np.mean([v for v, _ in mine]):6.2f} {f0:>8s} {len(f0s):2d}/{len(mine):<2d}")
        out.append(f"{voice:26s} " + " ".join(f"{c:>21s}" for c in cells))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdirs", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--judge", default=None, help="judge workdir (default WORKDIRS/judge)")
    p.add_argument("--ar", default=None, help="AR workdir (default WORKDIRS/ar)")
    p.add_argument("--flow-matching", default=None, help="flow-matching workdir (default WORKDIRS/flow_matching)")
    p.add_argument("--ar-steps", default="", help="comma-separated AR checkpoint steps (default: the latest)")
    p.add_argument("--name", default="espeak_tts/small")
    p.add_argument("--split", default="test_unseen")
    p.add_argument("--limit", type=int, default=12)
    p.add_argument("--by-voice", action="store_true", help="also each rung's voiced fraction and F0 per voice "
                                                          "(the lines' speakers), and how many lines had a pitch")
    skip = p.add_mutually_exclusive_group()
    skip.add_argument("--skip-resynthesis", action="store_true", help="only the tts rows")
    skip.add_argument("--skip-system", action="store_true", help="no tts rows (no AR decoding)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperatures", default=str(TEMPERATURE), help="comma-separated AR sampling temperatures")
    p.add_argument("--candidates", default="1", help="comma-separated best-of-n counts (AR samples a line, "
                                                    "the tokenizer's CTC head picks one)")
    p.add_argument("--ctc-guidance", type=float, default=0.0, help="CTC guidance weight of the tts rows' AR "
                                                                  "sampling (0: none)")
    p.add_argument("--fm-steps", default="10", help="comma-separated flow-matching ODE steps (tokens rung)")
    p.add_argument("--cfg-weights", default="0.7", help="comma-separated classifier-free guidance weights "
                                                       "(tokens rung)")
    p.add_argument("--fm-temperatures", default="1", help="comma-separated scales of flow matching's starting "
                                                         "noise (tokens rung and system rows)")
    args = p.parse_args(argv)

    workdirs = {s: f"{args.workdirs}/{s}" for s in ("tokenizer", "ar", "flow_matching", "judge")}
    workdirs["ar"] = args.ar or workdirs["ar"]
    workdirs["flow_matching"] = args.flow_matching or workdirs["flow_matching"]
    judge_dir = args.judge or workdirs["judge"]
    # Without a judge (a demo run with --judge-minutes 0) the rows keep their voicing and durations.
    judge = JudgeTranscriber(judge_dir) if os.path.isdir(judge_dir) else None
    sr = judge.sample_rate if judge else int(read_config(workdirs["tokenizer"]).data.sample_rate)
    if judge is None:
        print(f"no judge at {judge_dir}: judge CER not scored", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        meta = seed_tts.make_meta_from_corpus(args.data_dir, args.name, args.split, out_dir=tmp, n=args.limit)
        lines = seed_tts.read_meta(meta)
        truth = seed_tts.espeak_ground_truth(sr)
        truths = [truth(line.utt, line.target_text)[0] for line in lines]
        rows = {} if args.skip_resynthesis else {"ground_truth": truths}
        settings = [(int(n), float(w), float(t)) for n in args.fm_steps.split(",")
                    for w in args.cfg_weights.split(",") for t in args.fm_temperatures.split(",")]
        for i, (fm_steps, cfg_weight, fm_temperature) in enumerate([] if args.skip_resynthesis else settings):
            rungs = resynthesis_rungs(workdirs, lines, truths, seed=args.seed, cfg_weight=cfg_weight,
                                      fm_steps=fm_steps, fm_temperature=fm_temperature)
            if i == 0:
                rows["flow_vae"] = rungs["flow_vae"]
            sampler = "" if len(settings) == 1 else f" n={fm_steps} w={cfg_weight:g} x0={fm_temperature:g}"
            rows["tokens" + sampler] = rungs["tokens"]
        print(f"{'rung':26s} {'judge CER':>9s} {'voiced':>7s} {'duration':>8s}", flush=True)
        for rung, wavs in rows.items():
            print(f"{rung:26s} {'%9.3f %7.2f %8.2f' % score(judge, lines, wavs, truths, sr)}", flush=True)
        if args.by_voice and rows:
            print("\n".join(by_voice(lines, rows, sr)), flush=True)
        for step in [] if args.skip_system else [int(s) for s in args.ar_steps.split(",") if s] or [None]:
            for temperature, n, fm_t in [(float(t), int(n), float(x)) for t in args.temperatures.split(",")
                                         for n in args.candidates.split(",") for x in args.fm_temperatures.split(",")]:
                wavs = tts_rung(workdirs, lines, step, seed=args.seed, temperature=temperature, candidates=n,
                                ctc_guidance=args.ctc_guidance, fm_temperature=fm_t)
                rung = (f"tts@{'latest' if step is None else step} T={temperature:g}" + (f" n={n}" if n > 1 else "")
                        + (f" x0={fm_t:g}" if fm_t != 1 else ""))
                print(f"{rung:26s} {'%9.3f %7.2f %8.2f' % score(judge, lines, wavs, truths, sr)}", flush=True)


if __name__ == "__main__":
    main()
