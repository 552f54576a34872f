"""seed-tts-eval style evaluation of a voice-cloning TTS: WER and SIM over a meta file, plus
MCD-DTW and the duration ratio against a ground truth (espeak renders one for the embedded corpus).

Meta file: one line per utterance, `utt|prompt_text|prompt_wav|target_text`, as in seed-tts-eval
(an optional fifth field is a ground-truth wav of the target text); wav paths are relative to the
meta file's directory. The system speaks `target_text` in the voice of `prompt_wav` (zero-shot),
or also given the prompt's transcript (one-shot).

- WER: both texts normalised (`normalize_for_wer`), scored with jiwer; Chinese, Japanese and
  Cantonese by characters, other languages by words. The corpus figure is the MEAN of the
  per-utterance WERs, as seed-tts-eval reports it, not the pooled WER over all words.
- SIM: cosine between speaker embeddings of the output and of the PROMPT audio.
- MCD-DTW (dB) and duration ratio (output / ground truth): see `speech_jax.eval.mcd`.
- Reference levels beside them: the ground truth's own SIM against the prompt (the ceiling) and the
  SIM of another speaker's prompt against the prompt (the floor); with a judge (a CTC recogniser
  trained on espeak_tts, `speech_jax.eval.judge`), its CER on the output and on the ground truth: an
  in-domain proxy for intelligibility where no Whisper is at hand.

Embedded-corpus convention: meta lines written by `make_meta_from_corpus` name utterances
`<speaker id>/<utt_id>`, and a speaker id (e.g. `en-m3-p40-r165`) fully describes an espeak voice,
so `espeak_ground_truth` renders any text in the prompt speaker's voice, bit-exact with the
corpus's own audio for the corpus's sentences.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence

import jiwer
import numpy as np

from speech_jax.audio.io import check_audio, load_audio, resample, save_audio
from speech_jax.eval import mcd as mcd_lib
from speech_jax.eval import voicing
from speech_jax.eval.models import SpeakerEmbedder, Transcriber

log = logging.getLogger(__name__)

__all__ = [
    "MetaError", "MetaLine", "read_meta", "normalize_for_wer", "wer", "corpus_wer", "pooled_wer",
    "sim", "evaluate", "espeak_ground_truth", "make_meta_from_corpus", "speaker_of",
    "voice_from_speaker_id", "corpus_language", "summary_markdown", "Transcriber", "SpeakerEmbedder",
]

MODES = ("zero_shot", "one_shot")
METRICS = ("wer", "sim", "mcd", "duration_ratio", "judge_cer", "gt_judge_cer", "gt_sim", "sim_other_speaker",
           "f0_error", "gt_f0_error", "voiced", "gt_voiced")
# Scored by characters (seed-tts-eval scores zh by characters); the primary subtag or a name.
CHARACTER_LANGUAGES = frozenset({"zh", "cmn", "yue", "ja", "chinese", "mandarin", "cantonese",
                                 "japanese"})
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u02b9": "'",
                              "\u2032": "'"})
# Han, kana and bopomofo: one token a character when the language is unknown.
_CJK = re.compile("([\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
                  "\uf900-\ufaff\U00020000-\U0003ffff])")


# --------------------------------------------------------------------------- meta files

class MetaError(ValueError):
    """A meta file that cannot be used; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class MetaLine:
    utt: str
    prompt_text: str
    prompt_wav: str  # absolute path
    target_text: str
    gt_wav: str | None = None  # absolute path of the optional fifth field
    line: int = 0  # 1-based line number in the meta file


def _check_utt(utt: str) -> str | None:
    """Why `utt` cannot name an output wav under out_dir/wavs, or None."""
    if not utt:
        return "empty utt"
    if utt.startswith("/") or "\\" in utt or any(p in ("", ".", "..") for p in utt.split("/")):
        return f"utt {utt!r} must be a relative name without '.', '..' or empty parts"
    return None


def read_meta(path: str | os.PathLike) -> list[MetaLine]:
    """Lines of a seed-tts-eval meta file; blank lines skipped.

    Raises MetaError naming the line for a wrong number of fields, an empty target text, a bad
    or repeated utt, or a prompt (or ground-truth) wav that does not exist.
    """
    path = os.path.abspath(os.fspath(path))
    base = os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw_lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MetaError(f"{path}: cannot read the meta file ({e})") from e
    lines, seen = [], {}
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        fields = raw.split("|")
        if len(fields) not in (4, 5):
            raise MetaError(f"{where}: expected 4 fields 'utt|prompt_text|prompt_wav|target_text' "
                            f"(or a 5th, gt_wav), got {len(fields)}: {raw!r}")
        utt, prompt_text, prompt_wav, target_text = (x.strip() for x in fields[:4])
        problem = _check_utt(utt)
        if problem:
            raise MetaError(f"{where}: {problem}")
        if utt in seen:
            raise MetaError(f"{where}: utt {utt!r} repeats line {seen[utt]}")
        seen[utt] = number
        if not target_text:
            raise MetaError(f"{where}: empty target text for {utt!r}")
        if not prompt_wav:
            raise MetaError(f"{where}: empty prompt_wav for {utt!r}")
        gt_wav = fields[4].strip() if len(fields) == 5 else ""
        wavs = [_meta_wav(base, rel, name, utt, where)
                for name, rel in (("prompt_wav", prompt_wav), ("gt_wav", gt_wav))]
        lines.append(MetaLine(utt, prompt_text, wavs[0], target_text, wavs[1], number))
    if not lines:
        raise MetaError(f"{path}: no utterances")
    return lines


def _meta_wav(base: str, rel: str, name: str, utt: str, where: str) -> str | None:
    if not rel:
        return None
    full = os.path.normpath(os.path.join(base, rel))
    if not os.path.isfile(full):
        raise MetaError(f"{where}: {name} {rel!r} of {utt!r} not found (looked at {full})")
    return full


def _meta_field(text: str, what: str) -> str:
    if "|" in text or "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} cannot go in a meta line ('|' or a line break)")
    return text


# --------------------------------------------------------------------------- WER and SIM

def _primary(language: str | None) -> str | None:
    return None if language is None else language.strip().lower().replace("_", "-").split("-")[0]


def normalize_for_wer(text: str, language: str | None = None) -> str:
    """Text as WER scores it: space-separated tokens.

    NFKC (full-width forms to plain ones), curly apostrophes to "'", lower case, every Unicode
    punctuation and symbol character deleted except the apostrophe (as seed-tts-eval deletes
    them, without leaving a space), whitespace collapsed. Chinese, Japanese and Cantonese become
    one token a character; other languages one a word; an unknown language (None) one a word with
    each Han or kana character on its own.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    text = "".join(c for c in text if c == "'" or unicodedata.category(c)[0] not in "PS")
    primary = _primary(language)
    if primary in CHARACTER_LANGUAGES:
        return " ".join(c for c in text if not c.isspace())
    if primary is None:
        text = _CJK.sub(r" \1 ", text)
    return " ".join(text.split())


def wer(ref: str, hyp: str, language: str | None = None) -> float:
    """Word (or character) error rate of one utterance after `normalize_for_wer`; may exceed 1."""
    ref_n, hyp_n = normalize_for_wer(ref, language), normalize_for_wer(hyp, language)
    if not ref_n:
        raise ValueError(f"reference {ref!r} is empty after normalisation")
    if not hyp_n:
        return 1.0  # every reference token deleted
    return float(jiwer.wer(ref_n, hyp_n))


def _languages(language, n):
    return list(language) if isinstance(language, (list, tuple)) else [language] * n


def corpus_wer(refs: Sequence[str], hyps: Sequence[str], language=None) -> float:
    """seed-tts-eval's corpus figure: the mean of per-utterance WERs (`language` one or a list)."""
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"need as many hypotheses as references (>0), got {len(refs)} and {len(hyps)}")
    langs = _languages(language, len(refs))
    return float(np.mean([wer(r, h, l) for r, h, l in zip(refs, hyps, langs)]))


def pooled_wer(refs: Sequence[str], hyps: Sequence[str], language=None) -> float:
    """Errors over all utterances / reference tokens over all utterances (NOT the protocol's)."""
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"need as many hypotheses as references (>0), got {len(refs)} and {len(hyps)}")
    langs = _languages(language, len(refs))
    errors = tokens = 0
    for r, h, l in zip(refs, hyps, langs):
        r_n, h_n = normalize_for_wer(r, l), normalize_for_wer(h, l)
        n = len(r_n.split())
        errors += wer(r, h, l) * n if r_n else len(h_n.split())
        tokens += n
    if tokens == 0:
        raise ValueError("the references are empty after normalisation")
    return errors / tokens


def sim(embedding_a, embedding_b) -> float:
    """Cosine similarity of two speaker embeddings."""
    a = np.asarray(embedding_a, np.float64).ravel()
    b = np.asarray(embedding_b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in size: {a.size} and {b.size}")
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("embeddings must be finite and non-zero")
    return float(np.dot(a, b) / norm)


# --------------------------------------------------------------------------- embedded corpus

_SPEAKER_ID = re.compile(r"^(?P<language>[^-/]+)-(?P<variant>[^/]+)-p(?P<pitch>\d+)-r(?P<rate>\d+)$")


def speaker_of(utt: str) -> str:
    """The speaker id of a corpus meta line's utt: the part before the first '/'
    (`<speaker id>/<utt_id>`), or else the corpus utt_id's prefix (`<speaker id>_<index>`)."""
    if "/" in utt:
        return utt.split("/", 1)[0]
    if "_" in utt:
        return utt.rsplit("_", 1)[0]
    raise ValueError(f"utt {utt!r} names no speaker; embedded-corpus lines are '<speaker id>/<utt_id>'")


def voice_from_speaker_id(speaker: str):
    """The espeak `Voice` of an embedded-corpus speaker id such as 'en-m3-p40-r165'."""
    from data_pipelines.espeak_tts.voices import Voice

    m = _SPEAKER_ID.match(speaker)
    if not m:
        raise ValueError(f"{speaker!r} is not an espeak corpus speaker id "
                         "('<language>-<variant|default>-p<pitch>-r<rate>')")
    variant = "" if m["variant"] == "default" else m["variant"]
    return Voice(m["language"], variant, int(m["pitch"]), int(m["rate"]))


def corpus_language(utt: str) -> str:
    """The language of an embedded-corpus utterance, from its speaker ('cmn', 'en', ...)."""
    return voice_from_speaker_id(speaker_of(utt)).language


GroundTruth = Callable[[str, str], tuple[np.ndarray, int]]


def espeak_ground_truth(sample_rate: int = 16000, speaker: Callable[[str], str] = speaker_of) -> GroundTruth:
    """`ground_truth(utt, target_text) -> (wav float32, sample_rate)`: espeak speaks `target_text`
    in the voice of `speaker(utt)`, rendered exactly as the corpus builder renders (resampled to
    `sample_rate`, edge silence trimmed to 0.1 s), so a corpus sentence comes out bit-exact."""
    from data_pipelines.espeak_tts import render

    def ground_truth(utt: str, target_text: str) -> tuple[np.ndarray, int]:
        voice = voice_from_speaker_id(speaker(utt))
        audio = render.render(render.Utterance(utt, "eval", voice, target_text), sample_rate)
        return audio.astype(np.float32) / 32768.0, sample_rate

    ground_truth.__qualname__ = f"espeak_ground_truth(sample_rate={sample_rate})"
    return ground_truth


def make_meta_from_corpus(data_dir: str, name: str = "espeak_tts/tiny", split: str = "test_unseen", *,
                          out_dir: str, n: int | None = None, meta_name: str = "meta.lst",
                          speaker: str | None = None) -> str:
    """Writes `out_dir/meta.lst` and the prompt wavs (`out_dir/prompts/<utt_id>.wav`) from a prepared
    corpus; returns the meta path.

    Each line pairs two utterances of one speaker: the prompt is one of them (its audio and text),
    the target text is ANOTHER's, and the line's utt is `<speaker id>/<target utt_id>`. Speakers with
    a single utterance are skipped. Lines go round the speakers (first utterance of each, then the
    second, ...), so the first `n` cover as many speakers as they can. `speaker`: that speaker's lines only
    (e.g. to compare a saved voice of theirs with zero-shot cloning).
    """
    from data_pipelines.sources import _str, open_source

    source = open_source(name, data_dir, split)
    by_speaker = collections.defaultdict(list)
    for i in range(len(source)):
        rec = source[i]
        by_speaker[_str(rec["speaker"])].append(
            (_str(rec["utt_id"]), _str(rec["text"]), np.asarray(rec["audio"]), int(rec["sample_rate"])))
    if speaker is not None:
        if speaker not in by_speaker:
            raise ValueError(f"{name} {split} has no speaker {speaker!r}; it has {', '.join(sorted(by_speaker)[:8])}")
        by_speaker = {speaker: by_speaker[speaker]}
    groups = [(spk, sorted(utts, key=lambda u: u[0])) for spk, utts in sorted(by_speaker.items()) if len(utts) > 1]
    pairs = [(spk, utts[k], utts[(k + 1) % len(utts)])
             for k in range(max((len(utts) for _, utts in groups), default=0))
             for spk, utts in groups if k < len(utts)]
    if n is not None:
        pairs = pairs[:n]
    if not pairs:
        raise ValueError(f"{name} {split}: no speaker has two utterances to pair")
    os.makedirs(os.path.join(out_dir, "prompts"), exist_ok=True)
    lines = []
    for spk, (p_id, p_text, p_audio, p_rate), (t_id, t_text, _, _) in pairs:
        rel = f"prompts/{p_id}.wav"
        if not os.path.exists(os.path.join(out_dir, rel)):
            save_audio(os.path.join(out_dir, rel), p_audio, p_rate)
        utt = f"{spk}/{t_id}"
        lines.append("|".join([_meta_field(utt, "utt"), _meta_field(p_text, "prompt text"), rel,
                               _meta_field(t_text, "target text")]))
    meta = os.path.join(out_dir, meta_name)
    with open(meta + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(meta + ".tmp", meta)
    return meta


# --------------------------------------------------------------------------- the run

def _as_mono(wav, sample_rate, name) -> np.ndarray:
    wav = np.asarray(wav)
    if wav.ndim == 2 and wav.shape[0] == 1:  # [1, T] from a batched synthesiser
        wav = wav[0]
    return check_audio(wav, sample_rate, name=name, min_peak=0.0)


def _describe(obj) -> str | None:
    if obj is None:
        return None
    return getattr(obj, "__qualname__", None) or repr(obj)


def _mean(values):
    values = [v for v in values if v is not None]
    return (float(np.mean(values)) if values else None), len(values)


def _summaries(records):
    means, counts = {}, {}
    for metric in METRICS:
        means[metric], counts[metric] = _mean(r.get(metric) for r in records)
    rtfs = [r["synthesis_seconds"] / r["seconds"] for r in records if r.get("seconds")]
    means["rtf"] = float(np.mean(rtfs)) if rtfs else None
    return means, counts


class _Record(dict):
    """One utterance's results; `attempt` runs a stage and records its failure instead of raising."""

    def attempt(self, stage: str, fn: Callable):
        try:
            return fn()
        except Exception as e:  # one utterance's failure is recorded, the run goes on
            self["errors"][stage] = f"{type(e).__name__}: {e}"
            log.warning("%s: %s failed: %s", self["utt"], stage, self["errors"][stage])
            return None


def _synthesized(synthesize, line: MetaLine, mode: str, language: str | None) -> tuple[np.ndarray, int]:
    out = synthesize(line.target_text, line.prompt_wav, line.prompt_text if mode == "one_shot" else None, language)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"synthesize must return (wav, sample_rate), got {type(out).__name__}")
    return _as_mono(out[0], out[1], line.utt), int(out[1])


def _save(out_dir: str, utt: str, wav: np.ndarray, sr: int) -> str:
    rel = os.path.join("wavs", *utt.split("/")) + ".wav"
    os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
    save_audio(os.path.join(out_dir, rel), wav, sr)
    return rel


def _prompt_f0(path: str, cache: dict) -> float | None:
    """The prompt recording's median F0 (Hz), read once per prompt (`cache` keyed by ("f0", path))."""
    if ("f0", path) not in cache:
        wav, sr = load_audio(path)
        cache[("f0", path)] = voicing.median_f0(_as_mono(wav, sr, path), sr)
    return cache[("f0", path)]


def _prompt_embedding(embedder, path: str, cache: dict) -> np.ndarray:
    if path not in cache:
        cache[path] = embedder.embed(*load_audio(path))
    return cache[path]


def _evaluate_line(line: MetaLine, synthesize, out_dir, mode, transcriber, embedder, ground_truth,
                   language_of, prompt_embeddings, judge, other_prompt: str | None) -> dict:
    rec = _Record(utt=line.utt, line=line.line, language=None, target_text=line.target_text,
                  prompt_wav=line.prompt_wav, wav=None, seconds=None, synthesis_seconds=None,
                  hypothesis=None, judge_hypothesis=None, **{m: None for m in METRICS}, errors={})
    language = rec["language"] = rec.attempt("language", lambda: language_of(line.utt))
    start = time.perf_counter()
    synthesized = rec.attempt("synthesize", lambda: _synthesized(synthesize, line, mode, language))
    if synthesized is None:
        return dict(rec)
    wav, sr = synthesized
    rec["synthesis_seconds"] = time.perf_counter() - start
    rec["seconds"] = wav.size / sr
    rec["wav"] = rec.attempt("save", lambda: _save(out_dir, line.utt, wav, sr))

    if transcriber is not None:
        rec["hypothesis"] = rec.attempt("transcribe", lambda: transcriber.transcribe(wav, sr, language))
        if rec["hypothesis"] is not None:
            rec["wer"] = rec.attempt("wer", lambda: wer(line.target_text, rec["hypothesis"], language))
    if judge is not None:
        rec["judge_hypothesis"] = rec.attempt("judge", lambda: judge.transcribe(wav, sr, language))
        if rec["judge_hypothesis"] is not None:
            rec["judge_cer"] = rec.attempt("judge_cer", lambda: judge.cer(rec["judge_hypothesis"],
                                                                          line.target_text, language))
    # Pitch, the plainest trace of a voice: the output's median F0 against the prompt's, in semitones
    # (None where either has too few voiced frames to read a pitch from).
    prompt_f0 = lambda: _prompt_f0(line.prompt_wav, prompt_embeddings)  # noqa: E731
    voiced = rec.attempt("voiced", lambda: voicing.voicing_summary(wav, sr))
    if voiced is not None:
        rec["voiced"] = voiced[0]
        rec["f0_error"] = rec.attempt("f0_error", lambda: voicing.semitones_apart(voiced[1], prompt_f0()))
    prompt = lambda: _prompt_embedding(embedder, line.prompt_wav, prompt_embeddings)  # noqa: E731
    if embedder is not None:
        rec["sim"] = rec.attempt("sim", lambda: sim(embedder.embed(wav, sr), prompt()))
        if rec["sim"] is not None and other_prompt is not None:  # the floor, on the lines SIM scored
            rec["sim_other_speaker"] = rec.attempt("sim_other_speaker", lambda: sim(
                _prompt_embedding(embedder, other_prompt, prompt_embeddings), prompt()))
    if ground_truth is not None or line.gt_wav is not None:
        def reference():
            ref, ref_sr = (ground_truth(line.utt, line.target_text) if ground_truth is not None
                           else load_audio(line.gt_wav))
            return resample(_as_mono(ref, ref_sr, f"ground truth of {line.utt}"), ref_sr, sr)
        ref = rec.attempt("ground_truth", reference)
        if ref is not None:
            rec["mcd"] = rec.attempt("mcd", lambda: mcd_lib.mcd_dtw(ref, wav, sr))
            rec["duration_ratio"] = rec.attempt("duration_ratio",
                                                lambda: mcd_lib.duration_ratio(ref, wav, sr))
            # Reference levels: what the real speech of this line scores.
            if judge is not None:
                rec["gt_judge_cer"] = rec.attempt("gt_judge_cer", lambda: judge.cer(
                    judge.transcribe(ref, sr, language), line.target_text, language))
            if embedder is not None:
                rec["gt_sim"] = rec.attempt("gt_sim", lambda: sim(embedder.embed(ref, sr), prompt()))
            gt_voiced = rec.attempt("gt_voiced", lambda: voicing.voicing_summary(ref, sr))
            if gt_voiced is not None:
                rec["gt_voiced"] = gt_voiced[0]
                rec["gt_f0_error"] = rec.attempt("gt_f0_error", lambda: voicing.semitones_apart(
                    gt_voiced[1], prompt_f0()))
    return dict(rec)


def _speaker_key(line: MetaLine) -> str:
    try:
        return speaker_of(line.utt)
    except ValueError:  # not an embedded-corpus utt: prompts in different files stand for speakers
        return line.prompt_wav


def _other_speaker_prompts(lines: list[MetaLine]) -> list[str | None]:
    """For each line, the prompt of the next line (round the list) with another speaker: the SIM floor's
    voice; None when the meta file has a single speaker."""
    keys = [_speaker_key(line) for line in lines]
    n = len(lines)
    return [next((lines[(i + k) % n].prompt_wav for k in range(1, n) if keys[(i + k) % n] != keys[i]), None)
            for i in range(n)]


def evaluate(meta_path, synthesize: Callable, out_dir: str, *, mode: str = "zero_shot",
             transcriber: Transcriber | None = None, embedder: SpeakerEmbedder | None = None,
             ground_truth: GroundTruth | None = None,
             language_of: Callable[[str], str | None] | str | None = None,
             limit: int | None = None, judge=None) -> dict:
    """Synthesises every meta line and scores it; writes `out_dir/{wavs/<utt>.wav, results.json,
    summary.md}` and returns the results dict (`settings`, `means`, `counts`, `by_language`,
    `utterances`; WER as a fraction, missing values as null).

    `synthesize(target_text, prompt_wav_path, prompt_text or None, language or None) -> (wav,
    sample_rate)`; the prompt text is passed only in `mode="one_shot"`. WER needs `transcriber`, SIM `embedder`
    (output vs prompt audio), MCD-DTW and duration ratio a ground truth: `ground_truth(utt,
    target_text) -> (wav, sr)` or, when None, the meta line's fifth field. `judge` (a
    `speech_jax.eval.judge.JudgeTranscriber`) adds its CER on the output and, with a ground truth, on
    that; an embedder with a ground truth adds its SIM (ceiling), and the floor is another
    speaker's prompt (see `_other_speaker_prompts`). `language_of(utt)` (or
    one language for all) steers transcription and WER normalisation. The meta file is checked
    whole before anything runs; afterwards a failing utterance (or metric) is recorded with its
    stage and reason and the run goes on. Means cover the utterances where the metric exists;
    counts say how many.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    lines = read_meta(meta_path)
    if limit is not None:
        lines = lines[:limit]
    lang = language_of if callable(language_of) else (lambda _utt: language_of)
    os.makedirs(out_dir, exist_ok=True)
    prompt_embeddings: dict[str, np.ndarray] = {}
    records = []
    for i, (line, other) in enumerate(zip(lines, _other_speaker_prompts(lines))):
        rec = _evaluate_line(line, synthesize, out_dir, mode, transcriber, embedder, ground_truth,
                             lang, prompt_embeddings, judge, other)
        records.append(rec)
        log.info("%d/%d %s%s", i + 1, len(lines), line.utt,
                 "".join(f" {m}={rec[m]:.3f}" for m in METRICS if rec[m] is not None))

    means, counts = _summaries(records)
    counts.update(lines=len(records), synthesized=sum(r["seconds"] is not None for r in records),
                  failed=sum(bool(r["errors"]) for r in records))
    by_language = {}
    for language in sorted({r["language"] for r in records if r["language"]}):
        group = [r for r in records if r["language"] == language]
        group_means, group_counts = _summaries(group)
        by_language[language] = {"means": group_means, "counts": {"lines": len(group), **group_counts}}
    results = {
        "settings": {
            "meta": os.path.abspath(os.fspath(meta_path)), "mode": mode, "limit": limit,
            "synthesize": _describe(synthesize), "transcriber": _describe(transcriber),
            "embedder": _describe(embedder), "judge": _describe(judge),
            "ground_truth": _describe(ground_truth) or ("meta gt_wav" if any(x.gt_wav for x in lines) else None),
            "wer": "mean of per-utterance WER; punctuation and symbols deleted except the apostrophe; "
                   "zh/ja/yue by characters",
            "sim": "cosine of output and prompt speaker embeddings",
            "sim_levels": "gt_sim: ground truth vs prompt (ceiling); sim_other_speaker: another speaker's "
                          "prompt vs prompt (floor)",
            "judge_cer": "phoneme-string CER of a CTC recognizer trained on espeak_tts against espeak's "
                         "phonemes of the target text: an in-domain proxy; gt_judge_cer: the same on the "
                         "ground truth",
            "mcd": {"n_mfcc": mcd_lib.N_MFCC, "window_ms": mcd_lib.WINDOW_MS, "hop_ms": mcd_lib.HOP_MS,
                    "n_mels": mcd_lib.N_MELS, "top_db": mcd_lib.TOP_DB, "c0": "excluded",
                    "alignment": "DTW after trimming edge silence"},
        },
        "means": means,
        "counts": counts,
        "by_language": by_language,
        "utterances": records,
    }
    _write_json(os.path.join(out_dir, "results.json"), results)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as f:
        f.write(summary_markdown(results))
    return results


def _write_json(path, obj):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, allow_nan=False)
    os.replace(path + ".tmp", path)


_PERCENT, _SIM = (lambda v: f"{100 * v:.2f}"), (lambda v: f"{v:.3f}")
_COLUMNS = (("wer", "WER (%)", _PERCENT), ("sim", "SIM", _SIM),
            ("mcd", "MCD-DTW (dB)", lambda v: f"{v:.2f}"),
            ("duration_ratio", "duration ratio", lambda v: f"{v:.3f}"),
            ("judge_cer", "judge CER (%)", _PERCENT),
            ("f0_error", "F0 vs prompt (semitones)", lambda v: f"{v:.2f}"),
            ("voiced", "voiced frames", lambda v: f"{v:.2f}"))
# Rows of the summary only: what real speech scores, to read the system's figures against.
_REFERENCE_ROWS = (("judge_cer", "judge CER (%) (in-domain proxy, CTC recognizer trained on espeak_tts)", _PERCENT),
                   ("gt_judge_cer", "judge CER (%) of the ground truth (reference level)", _PERCENT),
                   ("gt_sim", "SIM of the ground truth vs the prompt (ceiling)", _SIM),
                   ("sim_other_speaker", "SIM of another speaker vs the prompt (floor)", _SIM),
                   ("f0_error", "F0 vs prompt (semitones between the median F0s)", lambda v: f"{v:.2f}"),
                   ("gt_f0_error", "F0 of the ground truth vs the prompt (semitones, reference level)",
                    lambda v: f"{v:.2f}"),
                   ("voiced", "voiced frames (pYIN share)", lambda v: f"{v:.2f}"),
                   ("gt_voiced", "voiced frames of the ground truth (reference level)", lambda v: f"{v:.2f}"))


def _cell(value, fmt) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt(value)


def summary_markdown(results: dict) -> str:
    """The results as markdown: corpus means, means per language, and the failures."""
    s, means, counts = results["settings"], results["means"], results["counts"]
    out = [f"# seed-tts-eval: {os.path.basename(s['meta'])} ({s['mode']})", "",
           f"{counts['synthesized']} of {counts['lines']} utterances synthesised, "
           f"{counts['failed']} with a failure. WER is the mean of per-utterance WERs.", "",
           "| metric | mean | utterances |", "|---|---|---|"]
    labelled = {k for k, _, _ in _REFERENCE_ROWS}  # these rows carry their longer labels
    for key, label, fmt in [c for c in _COLUMNS if c[0] not in labelled] + list(_REFERENCE_ROWS):
        out.append(f"| {label} | {_cell(means[key], fmt)} | {counts[key]} |")
    rtf = _cell(means["rtf"], lambda v: f"{v:.3f}")
    out.append(f"| real-time factor | {rtf} | {counts['synthesized']} |")
    if len(results["by_language"]) > 1:
        out += ["", "| language | utterances | " + " | ".join(c[1] for c in _COLUMNS) + " |",
                "|---|---|" + "---|" * len(_COLUMNS)]
        for language, group in results["by_language"].items():
            out.append(f"| {language} | {group['counts']['lines']} | "
                       + " | ".join(_cell(group["means"][k], f) for k, _, f in _COLUMNS) + " |")
    failures = [(r["utt"], stage, " ".join(reason.replace("|", "/").split()))
                for r in results["utterances"] for stage, reason in r["errors"].items()]
    if failures:
        out += ["", f"## Failures ({len(failures)})", "", "| utt | stage | reason |", "|---|---|---|"]
        out += [f"| {utt} | {stage} | {reason} |" for utt, stage, reason in failures]
    settings = {k: s.get(k) for k in ("transcriber", "embedder", "judge", "ground_truth")}
    out += ["", "Models: " + ", ".join(f"{k} `{v}`" for k, v in settings.items()), ""]
    return "\n".join(out)
