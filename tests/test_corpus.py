"""The embedded espeak corpus: speakers, splits, audio, determinism, reading without TF."""

from __future__ import annotations

import collections
import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from data_pipelines.espeak_tts import plan, render, sentences, synth, voices
from data_pipelines.espeak_tts.voices import Voice


def _read(corpus, split):
    import tensorflow_datasets as tfds

    source = tfds.data_source(corpus["name"], data_dir=corpus["data_dir"], split=split,
                              download=False)
    return [source[i] for i in range(len(source))]


@pytest.fixture(scope="module")
def splits(tiny_corpus):
    return {s: _read(tiny_corpus, s) for s in plan.SPLITS}


def _by(examples, key):
    return collections.Counter(e[key].decode() for e in examples)


def test_speakers_and_languages(splits):
    train_speakers = _by(splits["train"], "speaker")
    languages = set(_by(splits["train"], "language"))
    assert len(train_speakers) >= 24
    assert {"en", "cmn"} <= languages and len(languages) >= 5
    # Speaker-conditioned training needs another utterance of the same speaker.
    assert min(train_speakers.values()) >= 3
    unseen = _by(splits["test_unseen"], "speaker")
    assert min(unseen.values()) >= 2
    assert set(_by(splits["test_unseen"], "language")) == languages  # one held out per language


def test_heldout_speakers_and_sentences(splits):
    train_speakers = set(_by(splits["train"], "speaker"))
    assert not train_speakers & set(_by(splits["test_unseen"], "speaker"))
    assert set(_by(splits["validation"], "speaker")) <= train_speakers
    train_texts = set(_by(splits["train"], "text"))
    assert not train_texts & set(_by(splits["validation"], "text"))
    assert not train_texts & set(_by(splits["test_unseen"], "text"))
    ids = [e["utt_id"] for s in splits.values() for e in s]
    assert len(ids) == len(set(ids))


def test_audio_is_int16_speech_at_the_configured_rate(splits):
    for examples in splits.values():
        for e in examples:
            audio = e["audio"]
            assert audio.dtype == np.int16 and audio.ndim == 1
            assert int(e["sample_rate"]) == 16000
            assert 0.5 < audio.size / 16000 < 12, e["utt_id"]
            assert np.abs(audio.astype(np.int32)).max() > 3000, e["utt_id"]
            # Trimmed: exactly 0.1 s of digital silence, then speech.
            assert not audio[:1600].any() and audio[1600:1700].any(), e["utt_id"]


def test_synthesis_is_deterministic():
    voice = Voice("en", "f2", 60, 150)
    first = synth.synthesize("The birch canoe slid on the smooth planks.", voice)
    synth.synthesize("Something else in between.", Voice("de", "m3", 30, 180))
    again = synth.synthesize("The birch canoe slid on the smooth planks.", voice)
    assert synth.native_sample_rate() == 22050
    assert first.dtype == np.int16 and first.size > 22050
    np.testing.assert_array_equal(first, again)


def test_rendering_in_workers_matches_in_process():
    utts = plan.make_plan(plan.CorpusSpec(languages=("en", "cmn"), speakers_per_language=2,
                                          train_per_speaker=2))["train"]
    serial = list(render.render_many(utts, 16000, processes=1))
    parallel = list(render.render_many(utts, 16000, processes=2))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_building_twice_gives_identical_data(tiny_corpus, splits, tmp_path):
    from data_pipelines.prepare import prepare

    again = prepare("espeak_tts", str(tmp_path), config="tiny")
    for split, examples in splits.items():
        rebuilt = {e["utt_id"]: e for e in _read(again, split)}
        assert rebuilt.keys() == {e["utt_id"] for e in examples}
        for e in examples:
            np.testing.assert_array_equal(e["audio"], rebuilt[e["utt_id"]]["audio"])
            assert e["text"] == rebuilt[e["utt_id"]]["text"]


def test_prepare_again_is_a_no_op(tiny_corpus):
    from data_pipelines.prepare import prepare

    mtime = os.path.getmtime(tiny_corpus["bpe_model"])
    assert prepare("espeak_tts", tiny_corpus["data_dir"], config="tiny") == tiny_corpus
    assert os.path.getmtime(tiny_corpus["bpe_model"]) == mtime
    assert tiny_corpus["bpe_model"] == os.path.join(tiny_corpus["corpus_dir"], "bpe.model")


def test_tokenizer_covers_every_language(tiny_corpus, splits):
    from speech_jax.text.bpe import BpeTokenizer
    from speech_jax.text.normalize import normalize_text

    tok = BpeTokenizer.load(tiny_corpus["bpe_model"])
    for e in splits["validation"]:  # held-out sentences: unseen character sequences
        text = normalize_text(e["text"].decode())
        ids = tok.encode(text)
        assert tok.unk_id not in ids and tok.decode(ids) == text


@pytest.mark.parametrize("register", [False, True])
def test_reading_does_not_import_tensorflow(tiny_corpus, register):
    code = textwrap.dedent(f"""
        import sys
        if {register}:
            import data_pipelines.espeak_tts
        import tensorflow_datasets as tfds
        source = tfds.data_source({tiny_corpus["name"]!r}, data_dir={tiny_corpus["data_dir"]!r},
                                  split="train", download=False)
        example = source[len(source) - 1]
        assert example["audio"].dtype.name == "int16" and example["audio"].size > 0
        assert "tensorflow" not in sys.modules, "reading imported tensorflow"
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_speaker_split_holds_out_some_of_every_language():
    speakers = voices.make_speakers(voices.LANGUAGES, 3, seed=7)
    assert speakers == voices.make_speakers(voices.LANGUAGES, 3, seed=7)
    assert len({s.id for s in speakers}) == len(speakers)
    seen, unseen = voices.split_speakers(speakers, 1, seed=7)
    assert {s.language for s in unseen} == set(voices.LANGUAGES)
    assert not set(seen) & set(unseen) and len(seen) + len(unseen) == len(speakers)


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(synth.EspeakError, match="xx"):
        synth.synthesize("hello", Voice("xx"))


def test_mixed_sentences_are_new_texts_of_training_words_only():
    spec = plan.CorpusSpec(languages=("en", "cmn"), speakers_per_language=2, mixed_per_speaker=5)
    utts = plan.make_plan(spec)
    assert utts == plan.make_plan(spec)  # a pure function of the spec
    base = plan.make_plan(dataclasses.replace(spec, mixed_per_speaker=0))
    for split in ("validation", "test_unseen"):  # mixing adds training utterances only
        assert utts[split] == base[split]
    mixed = [u for u in utts["train"] if u not in base["train"]]
    assert len(mixed) == 5 * len({u.voice for u in base["train"]})
    for lang in spec.languages:
        texts = [u.text for u in mixed if u.voice.language == lang]
        every = sentences.load_sentences(lang)
        heldout = sentences.heldout_indices(lang, spec.seed, spec.heldout_fraction,
                                            max(spec.validation_per_speaker, spec.test_per_speaker))

        def words(indices):
            return {w for i in indices for w in sentences._words(lang, every[i])}
        pool_words = words(i for i in range(len(every)) if i not in heldout)
        mixed_words = {w for t in texts for w in sentences._words(lang, t)}
        assert mixed_words <= pool_words
        assert not mixed_words & (words(heldout) - pool_words)  # held-out sentences keep their new words
        assert not set(texts) & set(every)  # new sentences, not copies
        assert len(set(texts)) == len(texts)


def test_many_voices_spreads_the_small_corpus_over_every_variant():
    """`many_voices`: about small's utterances, each language read by a voice of every variant."""
    from data_pipelines.espeak_tts import builder
    from data_pipelines.prepare import _builder
    utts = plan.make_plan(builder._SPECS["many_voices"])
    train = utts["train"]
    for lang in voices.LANGUAGES:
        readers = {u.voice for u in train if u.voice.language == lang}
        # 33 voices, one held out: every variant but at most the held-out voice's
        assert len(readers) == 32 and len({v.variant for v in readers}) >= len(voices.VARIANTS) - 1
    assert collections.Counter(u.voice for u in train).most_common(1)[0][1] == 10
    assert not {u.voice for u in utts["test_unseen"]} & {u.voice for u in train}
    # `varied`: the same voices and test lines, six times the distinct training sentences
    varied = plan.make_plan(builder._SPECS["varied"])
    assert [u.utt_id for u in varied["test_unseen"]] == [u.utt_id for u in utts["test_unseen"]]
    assert {u.voice for u in varied["train"]} == {u.voice for u in train} and len(varied["train"]) == len(train)
    assert len({u.text for u in varied["train"]}) > 5 * len({u.text for u in train})
    large = plan.make_plan(builder._SPECS["varied_large"])  # the same again, 4x the re-mixed sentences
    assert [u.utt_id for u in large["test_unseen"]] == [u.utt_id for u in utts["test_unseen"]]
    assert len(large["train"]) == 4 * len(train) and len({u.text for u in large["train"]}) > 3.5 * len(
        {u.text for u in varied["train"]})
    with pytest.raises(ValueError, match="many_voices"):  # the error names every size
        _builder("espeak_tts", "unused", "huge", None, "skip", 16000, None)


def test_style_corpora_are_small_s_speakers_speaking_in_the_style():
    from data_pipelines.espeak_tts.builder import _SPECS
    small, lively, calm = (plan.make_plan(_SPECS[k]) for k in ("small", "lively", "calm"))
    ids = lambda p, split: {u.utt_id for u in p[split]}  # noqa: E731
    for styled in (lively, calm):
        # The same speakers (ids), unseen voices and test sentences; a subset of small's training lines.
        assert ids(styled, "test_unseen") == ids(small, "test_unseen")
        assert ids(styled, "train") < ids(small, "train")
        assert {u.voice.id for u in styled["train"]} == {u.voice.id for u in small["train"]}
    utt = lively["test_unseen"][0]
    neutral = dataclasses.replace(utt.voice, style="")
    seconds = {}
    for name, voice in (("neutral", neutral), ("lively", utt.voice), ("calm", neutral.styled("calm"))):
        seconds[name] = len(render.render(dataclasses.replace(utt, voice=voice), 16000)) / 16000
    assert seconds["lively"] < 0.9 * seconds["neutral"] < 0.9 * seconds["calm"], seconds
    with pytest.raises(ValueError, match="unknown style"):
        neutral.styled("angry")
