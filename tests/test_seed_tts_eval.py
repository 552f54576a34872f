"""seed-tts-eval protocol (meta files, WER, SIM, the runner), MCD-DTW and duration ratio, espeak
ground truth on the embedded corpus, and the transformers adapters on tiny random models."""

from __future__ import annotations

import json
import os
import sys

import librosa
import numpy as np
import pytest

from data_pipelines.espeak_tts import render
from data_pipelines.espeak_tts.voices import LANGUAGES, Voice
from speech_jax.audio.io import load_audio, resample, save_audio
from speech_jax.eval import mcd, models, seed_tts
from speech_jax.eval.seed_tts import MetaError

SR = 16000
VOICE_A = Voice("en", "m3", 40, 165)
VOICE_B = Voice("en", "f2", 60, 150)
SENTENCE = "The quick brown fox jumps over the lazy dog."


def _speak(text: str, voice: Voice, sr: int = SR) -> np.ndarray:
    return render.render(render.Utterance("t", "test", voice, text), sr).astype(np.float32) / 32768.0


# --------------------------------------------------------------------------- WER and SIM

def test_normalisation_strips_punctuation_but_apostrophes_and_case():
    assert seed_tts.normalize_for_wer("Hello,  World! Don't -- stop…", "en") == "hello world don't stop"
    assert seed_tts.normalize_for_wer("It’s “fine”.", "en") == "it's fine"  # curly apostrophe kept
    assert seed_tts.wer("Hello, world!", "hello world", "en") == 0.0
    assert seed_tts.wer("don't stop", "dont stop", "en") == 0.5  # the apostrophe counts


def test_cjk_scored_by_characters():
    assert seed_tts.normalize_for_wer("你好，世界！", "zh") == "你 好 世 界"
    assert seed_tts.normalize_for_wer("「こんにちは。」", "ja") == "こ ん に ち は"
    assert seed_tts.normalize_for_wer("你好 世界", "cmn") == seed_tts.normalize_for_wer("你好世界", "yue")
    assert seed_tts.wer("你好世界。", "你好世间", "zh") == pytest.approx(0.25)  # 1 of 4 characters
    assert seed_tts.wer("你好世界。", "你好世间", "en") == 1.0  # one "word" without spaces
    # Unknown language: Han characters are tokens, Latin words stay words.
    assert seed_tts.normalize_for_wer("我们 love 你。", None) == "我 们 love 你"
    assert seed_tts.normalize_for_wer("Guten Tag, Welt!", "de") == "guten tag welt"


def test_corpus_wer_is_mean_of_utterances_not_pooled():
    refs = ["a b", "c d e f g h i j"]
    hyps = ["a x", "c d e f g h i j"]
    assert seed_tts.corpus_wer(refs, hyps, "en") == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert seed_tts.pooled_wer(refs, hyps, "en") == pytest.approx(0.1)  # 1 error / 10 words
    with pytest.raises(ValueError, match="empty"):
        seed_tts.wer("?!", "x", "en")
    assert seed_tts.wer("a b c", "", "en") == 1.0


def test_sim_is_cosine():
    a = np.array([1.0, 2.0, 3.0])
    assert seed_tts.sim(a, 5 * a) == pytest.approx(1.0)
    assert seed_tts.sim(a, -a) == pytest.approx(-1.0)
    assert seed_tts.sim([1, 0], [0, 2]) == pytest.approx(0.0)
    assert seed_tts.sim([1, 1], [1, 0]) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError):
        seed_tts.sim([0, 0], [1, 0])


# --------------------------------------------------------------------------- meta files

def test_meta_errors_name_the_line(tmp_path):
    save_audio(tmp_path / "p.wav", np.full(1600, 0.1, np.float32), SR)
    meta = tmp_path / "meta.lst"

    def check(text, match):
        meta.write_text(text, encoding="utf-8")
        with pytest.raises(MetaError, match=match):
            seed_tts.read_meta(meta)

    good = "u1|prompt text|p.wav|target one\n"
    check(good + "u2|only|three\n", r"meta.lst:2: expected 4 fields")
    check(good + "\nu3|t|missing.wav|x\n", r"meta.lst:3: prompt_wav 'missing.wav' of 'u3' not found")
    check(good + "u1|t|p.wav|again\n", r":2: utt 'u1' repeats line 1")
    check("../evil|t|p.wav|x\n", r":1: utt '../evil'")
    check("u1|t|p.wav|   \n", r":1: empty target text")
    meta.write_text(good + "spk/u2|t|p.wav|target two|p.wav\n", encoding="utf-8")
    lines = seed_tts.read_meta(meta)
    assert [l.utt for l in lines] == ["u1", "spk/u2"]
    assert lines[0].prompt_wav == str(tmp_path / "p.wav") and lines[0].gt_wav is None
    assert lines[1].gt_wav == str(tmp_path / "p.wav") and lines[1].line == 2


# --------------------------------------------------------------------------- MCD

@pytest.fixture(scope="module")
def speech():
    a = _speak(SENTENCE, VOICE_A)
    return {"a": a, "b": _speak(SENTENCE, VOICE_B),
            "slow": librosa.effects.time_stretch(a, rate=0.8)}  # 1.25 x longer, same spectra


def test_mcd_and_duration_ratio(speech):
    a, b, slow = speech["a"], speech["b"], speech["slow"]
    cep = mcd.mel_cepstrum(a, SR)
    assert cep.shape == (1 + a.size // 80, 13)  # 5 ms hop, c1..c13
    assert mcd.mcd_dtw(a, a, SR) == 0.0
    stretched = mcd.mcd_dtw(a, slow, SR)
    assert 0 < stretched < mcd.mcd_dtw(a, b, SR)  # tempo is aligned away, timbre is not
    assert stretched < 0.7 * mcd.mcd_unaligned(a, slow, SR)
    assert mcd.duration_ratio(a, slow, SR) == pytest.approx(1.25, rel=0.03)
    assert mcd.duration_ratio(slow, a, SR) == pytest.approx(0.8, rel=0.03)
    # Padding with silence changes neither.
    padded = np.concatenate([np.zeros(SR, np.float32), a, np.zeros(SR // 2, np.float32)])
    assert mcd.duration_ratio(a, padded, SR) == pytest.approx(1.0, abs=0.01)
    assert mcd.mcd_dtw(a, padded, SR) < 0.1 * stretched


# --------------------------------------------------------------------------- the runner

class FakeSystem:
    """Speaks the target text with the prompt's espeak voice; noise or an error for chosen texts."""

    def __init__(self, voices_by_prompt):
        self.voices = voices_by_prompt
        self.calls = []

    def __call__(self, target_text, prompt_wav, prompt_text, language=None):
        self.calls.append((target_text, prompt_wav, prompt_text))
        self.last_text = target_text
        if target_text.startswith("Broken"):
            raise RuntimeError("decoder exploded")
        if target_text.startswith("Silent"):
            return np.full(1000, np.nan, np.float32), SR
        if target_text.startswith("Noisy"):
            return 0.1 * np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32), SR
        return _speak(target_text, self.voices[os.path.basename(prompt_wav)]), SR


class OneWordWrong:
    """Transcribes as the text last synthesised, with its first word replaced."""

    def __init__(self, system):
        self.system, self.languages = system, []

    def transcribe(self, wav, sample_rate, language):
        self.languages.append(language)
        return " ".join(["WRONG"] + self.system.last_text.split()[1:])


class SpectralEmbedder:
    """Mean cepstrum: a crude but deterministic speaker embedding."""

    def __init__(self):
        self.lengths = []

    def embed(self, wav, sample_rate):
        self.lengths.append(len(wav))
        return mcd.mel_cepstrum(wav, sample_rate).mean(axis=0)


class FixedJudge:
    """A judge that hears "abc" in everything; its CER is the fraction of the reference's length unmatched."""

    def transcribe(self, wav, sample_rate, language):
        return "abc"

    def cer(self, hypothesis, text, language):
        return abs(len(text) - len(hypothesis)) / len(text)


@pytest.fixture(scope="module")
def meta_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("meta")
    save_audio(root / "a.wav", _speak("A prompt in the first voice.", VOICE_A), SR)
    save_audio(root / "b.wav", _speak("A prompt in the second voice.", VOICE_B), SR)
    lines = [(f"{VOICE_A.id}/one", "A prompt in the first voice.", "a.wav", "Hello there, my friend."),
             (f"{VOICE_B.id}/two", "A prompt in the second voice.", "b.wav", "Good morning to you all."),
             (f"{VOICE_A.id}/three", "A prompt in the first voice.", "a.wav", "Broken sentence here."),
             (f"{VOICE_B.id}/four", "A prompt in the second voice.", "b.wav", "Noisy words are these."),
             (f"{VOICE_B.id}/five", "A prompt in the second voice.", "b.wav", "Silent is this one.")]
    (root / "meta.lst").write_text("".join("|".join(l) + "\n" for l in lines), encoding="utf-8")
    return root


def test_evaluate_end_to_end(meta_dir, tmp_path):
    system = FakeSystem({"a.wav": VOICE_A, "b.wav": VOICE_B})
    asr, embedder = OneWordWrong(system), SpectralEmbedder()
    out = tmp_path / "eval"
    results = seed_tts.evaluate(meta_dir / "meta.lst", system, str(out), mode="one_shot",
                                transcriber=asr, embedder=embedder,
                                ground_truth=seed_tts.espeak_ground_truth(SR),
                                language_of=seed_tts.corpus_language, judge=FixedJudge())
    by_utt = {r["utt"]: r for r in results["utterances"]}
    one, two, three, four, five = (by_utt[f"{v.id}/{n}"] for v, n in (
        (VOICE_A, "one"), (VOICE_B, "two"), (VOICE_A, "three"), (VOICE_B, "four"), (VOICE_B, "five")))

    # One-shot passes the prompt text; the prompt wav is an absolute path.
    assert system.calls[0] == ("Hello there, my friend.", str(meta_dir / "a.wav"),
                               "A prompt in the first voice.")
    assert asr.languages[0] == "en"
    # WER: one word of four wrong in each scored utterance; the mean is over utterances.
    assert one["wer"] == pytest.approx(0.25) and two["wer"] == pytest.approx(0.2)
    assert four["wer"] == pytest.approx(0.25)
    assert results["means"]["wer"] == pytest.approx((0.25 + 0.2 + 0.25) / 3)
    assert one["hypothesis"] == "WRONG there, my friend."
    # SIM compares the output with the PROMPT audio.
    prompt_a, _ = load_audio(meta_dir / "a.wav")
    expected = seed_tts.sim(embedder.embed(_speak("Hello there, my friend.", VOICE_A), SR),
                            embedder.embed(prompt_a, SR))
    assert one["sim"] == pytest.approx(expected)
    assert four["sim"] < one["sim"]
    # Reference levels: the ground truth (here what the system said) against the prompt is the ceiling,
    # the other voice's prompt against this prompt the floor.
    assert one["gt_sim"] == pytest.approx(one["sim"]) and four["gt_sim"] > four["sim"]
    prompt_b, _ = load_audio(meta_dir / "b.wav")
    floor = seed_tts.sim(embedder.embed(prompt_b, SR), embedder.embed(prompt_a, SR))
    assert one["sim_other_speaker"] == pytest.approx(floor) and floor < one["gt_sim"]
    # The judge scores the output and the ground truth of each synthesised line.
    assert one["judge_hypothesis"] == "abc" and one["judge_cer"] == one["gt_judge_cer"] == pytest.approx(20 / 23)
    # The espeak rendering IS the ground truth: MCD 0, same duration; noise is far off.
    assert one["mcd"] == 0.0 and one["duration_ratio"] == pytest.approx(1.0)
    assert four["mcd"] > 3.0
    # Failures are recorded with their stage and reason, and the run went on.
    assert three["errors"] == {"synthesize": "RuntimeError: decoder exploded"} and three["wav"] is None
    assert "non-finite" in five["errors"]["synthesize"]
    # Pitch: the ground truth's median F0 against the prompt's (same voice, other words: a few semitones at
    # most); the noisy line has too little voicing to read a pitch from.
    assert one["f0_error"] == one["gt_f0_error"] < 3.0 and four["f0_error"] is None
    assert one["voiced"] == one["gt_voiced"] > 0.3 and four["voiced"] < one["voiced"]
    assert results["counts"] == {"wer": 3, "sim": 3, "mcd": 3, "duration_ratio": 3, "judge_cer": 3,
                                 "gt_judge_cer": 3, "gt_sim": 3, "sim_other_speaker": 3,
                                 "f0_error": 2, "gt_f0_error": 3, "voiced": 3, "gt_voiced": 3,
                                 "lines": 5, "synthesized": 3, "failed": 2}
    # Files: wavs per utterance, results.json, summary.md.
    assert os.path.isfile(out / "wavs" / VOICE_A.id / "one.wav")
    assert not os.path.exists(out / "wavs" / VOICE_A.id / "three.wav")
    saved = json.loads((out / "results.json").read_text())
    assert saved["means"]["wer"] == pytest.approx(results["means"]["wer"])
    assert saved["settings"]["mode"] == "one_shot" and len(saved["utterances"]) == 5
    summary = (out / "summary.md").read_text()
    assert "| WER (%) | 23.33 | 3 |" in summary
    assert "| SIM of the ground truth vs the prompt (ceiling) |" in summary
    assert "| SIM of another speaker vs the prompt (floor) |" in summary
    assert "judge CER (%) (in-domain proxy, CTC recognizer trained on espeak_tts)" in summary
    assert "decoder exploded" in summary and "Failures (2)" in summary


def test_evaluate_zero_shot_limit_and_bad_mode(meta_dir, tmp_path):
    system = FakeSystem({"a.wav": VOICE_A, "b.wav": VOICE_B})
    results = seed_tts.evaluate(meta_dir / "meta.lst", system, str(tmp_path), limit=2)
    assert [c[2] for c in system.calls] == [None, None]  # zero-shot: no prompt text
    assert results["counts"]["lines"] == 2 and results["means"]["wer"] is None
    with pytest.raises(ValueError, match="mode"):
        seed_tts.evaluate(meta_dir / "meta.lst", system, str(tmp_path), mode="few_shot")


# --------------------------------------------------------------------------- embedded corpus

def test_meta_from_corpus_and_espeak_ground_truth(tiny_corpus, tmp_path):
    meta = seed_tts.make_meta_from_corpus(tiny_corpus["data_dir"], "espeak_tts/tiny", "test_unseen",
                                          out_dir=str(tmp_path))
    lines = seed_tts.read_meta(meta)
    assert len(lines) == 16  # 8 unseen speakers x 2 utterances, each the other's prompt
    speakers = {seed_tts.speaker_of(l.utt) for l in lines}
    assert len(speakers) == 8 and {seed_tts.corpus_language(l.utt) for l in lines} == set(LANGUAGES)
    for l in lines:
        prompt_id = os.path.basename(l.prompt_wav)[:-4]
        assert seed_tts.speaker_of(prompt_id) == seed_tts.speaker_of(l.utt)  # same speaker
        assert prompt_id != l.utt.split("/")[1] and l.prompt_text != l.target_text  # another utterance
    assert [seed_tts.speaker_of(l.utt) for l in lines[:8]] == sorted(speakers)  # round the speakers

    ground_truth = seed_tts.espeak_ground_truth(SR)
    prompt_wavs = {os.path.basename(l.prompt_wav)[:-4]: l.prompt_wav for l in lines}
    for l in lines[:2] + lines[8:9]:
        wav, sr = ground_truth(l.utt, l.target_text)
        assert sr == SR and wav.dtype == np.float32 and wav.size > SR // 4
        # The target utterance is another line's prompt: the rendering is the corpus audio, exactly.
        corpus_wav, _ = load_audio(prompt_wavs[l.utt.split("/")[1]])
        np.testing.assert_array_equal(np.round(wav * 32768), np.round(corpus_wav * 32768))
        assert mcd.mcd_dtw(wav, wav, sr) == 0.0
    first = lines[0]
    wav24, sr24 = seed_tts.espeak_ground_truth(24000)(first.utt, first.target_text)
    assert sr24 == 24000
    assert wav24.size / 24000 == pytest.approx(ground_truth(first.utt, first.target_text)[0].size / SR, abs=0.01)
    speaker = seed_tts.speaker_of(first.utt)
    assert seed_tts.voice_from_speaker_id(speaker).id == speaker
    with pytest.raises(ValueError, match="speaker id"):
        seed_tts.voice_from_speaker_id("narrator")


# --------------------------------------------------------------------------- adapters

def test_adapters_say_which_extra_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"speech_jax\[eval\]"):
        models.WhisperTranscriber("/nowhere")
    with pytest.raises(ImportError, match=r"speech_jax\[eval\]"):
        models.WavLMEcapaEmbedder("/nowhere")


@pytest.fixture(scope="module")
def tiny_hf_models(tmp_path_factory):
    """A tiny random multilingual Whisper (byte-level vocab + Whisper's special tokens) and a tiny
    WavLMForXVector, saved with save_pretrained."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch
    from tokenizers import pre_tokenizers

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>",
                "<|transcribe|>", "<|notimestamps|>"]
    vocab.update({s: len(vocab) + i for i, s in enumerate(specials)})
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token a byte
    tokenizer = transformers.WhisperTokenizer(str(root / "vocab.json"), str(root / "merges.txt"),
                                              additional_special_tokens=specials[1:])
    processor = transformers.WhisperProcessor(transformers.WhisperFeatureExtractor(feature_size=80),
                                              tokenizer)
    end = vocab["<|endoftext|>"]
    ids = dict(decoder_start_token_id=vocab["<|startoftranscript|>"], eos_token_id=end,
               pad_token_id=end, bos_token_id=end)
    config = transformers.WhisperConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=32, **ids)
    whisper = transformers.WhisperForConditionalGeneration(config)
    whisper.generation_config = transformers.GenerationConfig(
        **ids, max_length=32, is_multilingual=True, no_timestamps_token_id=vocab["<|notimestamps|>"],
        lang_to_id={"<|en|>": vocab["<|en|>"], "<|zh|>": vocab["<|zh|>"]},
        task_to_id={"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]})
    whisper.save_pretrained(root / "whisper")
    processor.save_pretrained(root / "whisper")

    wavlm = transformers.WavLMForXVector(transformers.WavLMConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, tdnn_dim=(8, 8), tdnn_kernel=(5, 1), tdnn_dilation=(1, 1),
        xvector_output_dim=12, num_buckets=32, max_bucket_distance=100))
    wavlm.save_pretrained(root / "wavlm")
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                          do_normalize=True, return_attention_mask=True
                                          ).save_pretrained(root / "wavlm")
    return {"whisper": str(root / "whisper"), "wavlm": str(root / "wavlm"), "vocab": vocab}


def test_whisper_transcriber(tiny_hf_models, speech):
    asr = models.WhisperTranscriber(tiny_hf_models["whisper"], max_new_tokens=6)
    assert isinstance(asr, models.Transcriber) and asr.sample_rate == 16000
    seen = []
    generate = asr.model.generate

    def spy(features, **kwargs):
        seen.append((tuple(features.shape), kwargs))
        return generate(features, **kwargs)

    asr.model.generate = spy
    text = asr.transcribe(speech["a"], SR, "cmn")
    assert isinstance(text, str) and "<|" not in text  # special tokens are dropped
    assert seen[0][0] == (1, 80, 3000)
    assert seen[0][1]["language"] == "zh" and seen[0][1]["task"] == "transcribe"  # cmn -> zh, forced
    asr.transcribe(speech["a"], SR, "ko")  # a language the checkpoint lacks: Whisper detects it
    asr.transcribe(speech["a"], SR, None)
    assert "language" not in seen[1][1] and "language" not in seen[2][1]
    # Other sample rates are resampled to 16 kHz first.
    assert asr.transcribe(resample(speech["a"], SR, 24000), 24000, "en") == \
        asr.transcribe(resample(resample(speech["a"], SR, 24000), 24000, SR), SR, "en")
    with pytest.raises(OSError, match="nowhere"):
        models.WhisperTranscriber(str(tiny_hf_models["whisper"]) + "-nowhere")


def test_wavlm_xvector_embedder(tiny_hf_models, speech):
    embedder = models.WavLMEcapaEmbedder(tiny_hf_models["wavlm"])
    assert isinstance(embedder, models.SpeakerEmbedder)
    wav = speech["a"][:SR]
    e = embedder.embed(wav, SR)
    assert e.shape == (12,) and e.dtype == np.float32 and np.all(np.isfinite(e)) and np.any(e != 0)
    np.testing.assert_array_equal(e, embedder.embed(wav, SR))
    assert seed_tts.sim(e, embedder.embed(resample(wav, SR, 48000), 48000)) > 0.99
    with pytest.raises(OSError, match="nowhere"):
        models.WavLMXVectorEmbedder(str(tiny_hf_models["wavlm"]) + "-nowhere")
