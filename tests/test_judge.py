"""The CTC judge: phoneme labels, overfitting a handful of utterances through the one training loop, the
Transcriber over its workdir, `evaluate --judge`; and Resemblyzer's SIM where the `sim` extra is installed."""
import json
import os

import numpy as np
import pytest

from speech_jax.audio.io import resample
from speech_jax.cli import main
from speech_jax.eval import seed_tts
from speech_jax.eval.judge import LABEL, JudgeTranscriber
from speech_jax.text.phonemes import PhonemeVocab, phonemize
from speech_jax.train.loop import train
from speech_jax.train.metrics import read_metrics
from stages import ROOT, stage_config

OVERFIT_STEPS = 200
MESH_1 = ["--config.mesh.num_devices=1", "--config.mesh.data=1", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"]


def test_phonemes_are_espeaks_ipa_without_stress_spaces_or_language_tags():
    assert phonemize("Hello world.", "en") == "hələʊwɜːld"
    assert "(" not in phonemize("今日は良い天気です。", "ja")  # espeak switches to English for kanji
    vocab = PhonemeVocab("abh")
    assert vocab.vocab_size == 5 and vocab.encode_phonemes("bax") == [3, 2, 1]
    assert vocab.decode([0, 3, 2, 0, 1, 4]) == "ba?h"
    with pytest.raises(ValueError, match="distinct"):
        PhonemeVocab("aa")
    with pytest.raises(ValueError, match="no phonemes"):
        vocab.encode("   ", "en")
    with pytest.raises(ValueError, match="voice"):
        vocab.encode("hello", "no-such-language")


def test_augmentation_warps_and_masks_only_as_asked():
    import jax
    import jax.numpy as jnp
    from speech_jax.models.ctc_recognizer import frequency_warp, spec_augment
    mel = jnp.tile(jnp.arange(80.0)[None, None], (2, 50, 1))
    key = jax.random.key(0)
    np.testing.assert_allclose(frequency_warp(mel, key, 0.0), mel, atol=1e-5)
    warped = frequency_warp(mel, key, 0.1)
    assert warped.shape == mel.shape and not np.allclose(warped, mel)
    assert np.all(np.diff(np.asarray(warped), axis=-1) >= 0)  # a stretch keeps the channel order
    masked = spec_augment(mel + 1, key, freq_masks=2, freq_width=10, time_masks=2, time_width=5, fill=0.0)
    hidden = np.asarray(masked == 0)
    assert 0 < hidden.mean() < (2 * 10 / 80 + 2 * 5 / 50)
    assert np.array_equal(spec_augment(mel, key, freq_masks=0, freq_width=10, time_masks=0, time_width=5,
                                       fill=0.0), mel)


def test_utterance_normalisation_removes_each_channels_offset_and_gain():
    """CMVN: a voice that shifts and scales every mel channel (tilt, loudness) gives the same features;
    padding frames neither count nor come out non-zero."""
    import jax.numpy as jnp
    from speech_jax.audio.mel import utterance_normalise
    rng = np.random.default_rng(0)
    mel = jnp.asarray(rng.standard_normal((2, 40, 8)), jnp.float32)
    frames = jnp.arange(40)[None] < jnp.asarray([40, 25])[:, None]
    voiced = mel * jnp.asarray(rng.uniform(0.5, 2.0, 8)) + jnp.asarray(rng.uniform(-3, 3, 8))
    a, b = utterance_normalise(mel, frames), utterance_normalise(jnp.where(frames[..., None], voiced, 99.0), frames)
    np.testing.assert_allclose(a, b, atol=5e-3)  # up to eps against the scaled variance
    assert not np.asarray(b)[1, 25:].any()
    np.testing.assert_allclose(np.asarray(a)[1, :25].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(a)[1, :25].std(0), 1, atol=1e-3)


@pytest.fixture(scope="module")
def overfit_judge(tiny_corpus, tmp_path_factory):
    """The tiny judge trained through `train` on the 16 utterances of the tiny corpus's test_unseen only."""
    workdir = str(tmp_path_factory.mktemp("judge_overfit"))
    config = stage_config("judge", tiny_corpus, *MESH_1, "--config.data.train_split=test_unseen",
                          "--config.data.eval_split=test_unseen", f"--config.train.steps={OVERFIT_STEPS}",
                          f"--config.train.eval_every={OVERFIT_STEPS}", "--config.train.eval_batches=2",
                          "--config.train.log_every=50", "--config.optim.learning_rate=3e-3",
                          "--config.optim.warmup_steps=30", "--config.model.d_model=64",
                          "--config.model.num_layers=2", "--config.model.num_heads=4", "--config.model.mlp_dim=128",
                          "--config.model.num_kv_heads=2")
    train(config, workdir)
    return workdir


def test_the_judge_overfits_a_handful_of_utterances(overfit_judge):
    evals = [r for r in read_metrics(overfit_judge) if "eval/cer" in r]
    assert evals[-1]["step"] == OVERFIT_STEPS
    # Blank-only or unaligned output scores 1.0; a judge that hears its training utterances is far below.
    assert evals[-1]["eval/cer"] < 0.15, evals[-1]


def test_training_keeps_espeaks_readings_beside_the_corpus(overfit_judge, tiny_corpus):
    with open(os.path.join(tiny_corpus["corpus_dir"], "phonemes.json"), encoding="utf-8") as f:
        readings = json.load(f)["readings"]
    from data_pipelines.sources import split_index
    index = split_index(tiny_corpus["name"], tiny_corpus["data_dir"], "test_unseen")
    for text, language in zip(index["text"], index["language"]):
        assert phonemize(text, language, marks=False) == "".join(
            readings[language][text].replace("ˈ", "").replace("ˌ", "").split())


def test_the_transcriber_reads_a_trained_workdir(overfit_judge, tiny_corpus):
    from data_pipelines.sources import _str, open_source
    judge = JudgeTranscriber(overfit_judge, bucket_seconds=1.5)
    source = open_source(tiny_corpus["name"], tiny_corpus["data_dir"], "test_unseen")
    cers = []
    for i in range(4):
        rec = source[i]
        audio = np.asarray(rec["audio"], np.float32) / 32768.0
        text, language = _str(rec["text"]), _str(rec["language"])
        # At another rate, in stereo: the judge resamples to its own rate and mixes down.
        stereo = np.stack([resample(audio, 16000, 22050)] * 2, axis=1)
        hypothesis = judge.transcribe(stereo, 22050, language)
        assert isinstance(hypothesis, str)
        cers.append(judge.cer(hypothesis, text, language))
    assert np.mean(cers) < 0.25, cers
    with pytest.raises(ValueError, match="language"):
        judge.cer("abc", "hello", None)


def test_a_workdir_of_another_stage_is_not_a_judge(tiny_stages):
    with pytest.raises(ValueError, match="not a judge"):
        JudgeTranscriber(tiny_stages["tokenizer"])


def test_evaluate_fills_the_judge_column(tiny_stages, tiny_corpus, tmp_path):
    out = str(tmp_path / "eval")
    assert main(["evaluate", "--from-corpus", tiny_corpus["name"], "--data-dir", tiny_corpus["data_dir"],
                 "--out", out, "--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
                 "--flow-matching", tiny_stages["flow_matching"], "--judge", tiny_stages["judge"],
                 "--limit", "2"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["counts"]["judge_cer"] == results["counts"]["gt_judge_cer"] == 2
    assert np.isfinite(results["means"]["judge_cer"]) and np.isfinite(results["means"]["gt_judge_cer"])
    assert all(isinstance(u["judge_hypothesis"], str) for u in results["utterances"])
    assert "JudgeTranscriber" in results["settings"]["judge"]
    summary = open(os.path.join(out, "summary.md"), encoding="utf-8").read()
    assert "judge CER (%) (in-domain proxy, CTC recognizer trained on espeak_tts)" in summary
    assert "judge CER (%) of the ground truth (reference level)" in summary
    assert LABEL.startswith("judge CER (in-domain proxy")


def test_the_demo_uses_its_own_judge_config_when_given_none():
    from speech_jax.demo import JUDGE, Demo
    demo = Demo("/nonexistent-demo-dir", minutes=0, config_files={"tokenizer": "t.py"})
    assert demo.config_files[JUDGE] == os.path.join(ROOT, "experiments", "demo", "judge.py")
    with pytest.raises(ValueError, match="judge_minutes"):
        Demo("/nonexistent-demo-dir", judge_minutes=-1)


def test_a_judge_of_another_espeak_corpus_trains_there_and_never_hears_the_scored_voices(tmp_path):
    """A judge config with `own_corpus` keeps the espeak corpus it names, with the demo's test_unseen voices
    excluded; any other (the small judge's, inherited by a demo of another corpus) gets the demo's."""
    from speech_jax.demo import JUDGE, Demo
    config = tmp_path / "judge.py"
    config.write_text("from experiments.judge import tiny\n\n\ndef get_config():\n    c = tiny.get_config()\n"
                      "    c.data.name = 'espeak_tts/medium'\n    c.own_corpus = True\n    return c\n")
    demo = Demo(str(tmp_path / "demo"), minutes=0, corpus="tiny", config_files={JUDGE: str(config)})
    demo.state.update(corpus_name="espeak_tts/tiny", bpe_model="tiny/bpe.model")
    c = demo.stage_config(JUDGE)
    assert (c.data.name, c.data.bpe_model) == ("espeak_tts/medium", "")
    assert tuple(c.data.exclude_speakers_of) == ("espeak_tts/tiny:test_unseen",)
    demo.config_files[JUDGE] = os.path.join(ROOT, "experiments", "judge", "small.py")
    c = demo.stage_config(JUDGE)
    assert (c.data.name, c.data.bpe_model, tuple(c.data.exclude_speakers_of)) == (
        "espeak_tts/tiny", "tiny/bpe.model", ())


# --------------------------------------------------------------------------- Resemblyzer (extra `sim`)

def _espeak(text: str, speaker: str) -> np.ndarray:
    wav, _ = seed_tts.espeak_ground_truth(16000)(f"{speaker}/x", text)
    return wav


def test_resemblyzer_scores_the_same_espeak_voice_above_other_voices():
    pytest.importorskip("resemblyzer")
    from speech_jax.eval.models import ResemblyzerEmbedder, load_embedder
    embedder = load_embedder("resemblyzer")
    assert isinstance(embedder, ResemblyzerEmbedder)
    voices = ("en-m3-p40-r165", "en-f2-p60-r175", "en-default-p50-r150")
    texts = ("The quick brown fox jumps over the lazy dog.", "Please call Stella and ask her to bring these things.")
    emb = {(v, t): embedder.embed(_espeak(t, v), 16000) for v in voices for t in texts}
    same = [seed_tts.sim(emb[v, texts[0]], emb[v, texts[1]]) for v in voices]
    other = [seed_tts.sim(emb[a, texts[0]], emb[b, texts[1]]) for a in voices for b in voices if a != b]
    # espeak's voices share one synthesiser, so another voice can come close (measured 0.58-0.85 against
    # 0.82-0.88 for the same voice); on average the same voice is clearly above.
    assert np.mean(same) > np.mean(other) + 0.1, (same, other)
