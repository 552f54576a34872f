"""Text units: espeak phonemes as a model's input (stress and word spaces kept), saved and loaded as a
bundle keeps them, the synthesiser asking for the language they need; the tokenizer's CTC label rate."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from data_pipelines.espeak_tts.voices import RATES, Voice
from experiments.tokenizer import tiny
from speech_jax.infer.synthesizer import Synthesizer
from speech_jax.text import units
from speech_jax.text.phonemes import PhonemeVocab, phonemize
from speech_jax.train.tasks import tokenizer as task

from espeak_clips import SR, TEXTS, clips


def test_marks_keep_stress_and_word_spaces():
    plain, marked = phonemize("Hello there", "en"), phonemize("Hello there", "en", marks=True)
    assert " " not in plain and "ˈ" not in plain
    assert " " in marked and "ˈ" in marked
    assert marked.replace(" ", "").replace("ˈ", "").replace("ˌ", "") == plain


def test_vocab_saves_and_loads_with_its_marks(tmp_path):
    vocab = PhonemeVocab.build([("Hello there", "en"), ("Guten Tag", "de")], marks=True)
    loaded = units.load(str(tmp_path / vocab.save(str(tmp_path))))
    assert (loaded.symbols, loaded.marks) == (vocab.symbols, True)
    assert loaded.encode("Hello there", "en") == vocab.encode("Hello there", "en")


def test_a_corpus_readings_file_spares_espeak_the_next_time(tmp_path, monkeypatch):
    from speech_jax.text import phonemes
    path, pairs = str(tmp_path / "phonemes.json"), [("Hello there", "en"), ("Guten Tag", "de")]
    expected = [(phonemize(*p), phonemize(*p, marks=True)) for p in pairs]
    asked = []
    espeak = phonemes._espeak_readings
    monkeypatch.setattr(phonemes, "_espeak_readings", lambda pairs: asked.extend(pairs) or espeak(pairs))

    def new_process_reads():
        monkeypatch.setattr(phonemes, "_CORPUS_READINGS", {})
        asked.clear()
        phonemes.cache_readings(pairs + [("", "en")], path)  # an unusable text is skipped, not stored
        assert [(phonemize(*p), phonemize(*p, marks=True)) for p in pairs] == expected
        return sorted(asked)

    assert new_process_reads() == sorted(pairs + [("", "en")])
    assert new_process_reads() == [("", "en")]  # the file had the rest
    monkeypatch.setattr(phonemes, "_espeak_version", lambda: "another")
    assert new_process_reads() == sorted(pairs + [("", "en")])  # another espeak: read again
    with open(path, "w") as f:
        f.write('{"espeak": "anoth')  # a damaged file is rebuilt
    assert new_process_reads() == sorted(pairs + [("", "en")])
    assert new_process_reads() == [("", "en")]


def test_espeak_reads_many_texts_in_one_child_as_it_reads_each_alone():
    from speech_jax.text import phonemes
    pairs = [("Hello there, friend.", "en"), ("Guten Tag", "de"), ("你好，世界", "cmn"), ("Hola, ¿qué tal?", "es"),
             ("Chinese", "ja"), ("", "en"), ("Hello", "no-such-voice"), ("Hello there, friend.", "en")]
    alone = []
    for pair in pairs:
        try:
            alone.append(phonemes._espeak_reading(*pair))
        except ValueError:
            alone.append(None)
    assert phonemes._espeak_readings(pairs) == alone
    assert alone[-3:-1] == [None, None] and all(alone[:5])


def test_from_config_rejects_unknown_units_and_an_unresolved_inventory():
    data = ml_collections.ConfigDict(dict(text_units="letters", phonemes="", phoneme_marks=False))
    with pytest.raises(ValueError, match="text_units must be one of"):
        units.from_config(data)
    data.text_units = "phonemes"
    with pytest.raises(ValueError, match="data.phonemes is empty"):
        units.from_config(data)


def test_a_phoneme_model_needs_the_language_to_read_text():
    synth = Synthesizer(None, PhonemeVocab.build([("Hello there", "en")], marks=True))
    assert synth.needs_language
    with pytest.raises(ValueError, match="give the text's language"):
        synth.encode("Hello there")
    assert len(synth.encode("Hello there", "en")) == len(phonemize("Hello there", "en", marks=True))


def test_ctc_rate_gives_each_token_that_many_ctc_frames():
    config = tiny.get_config()
    config.model.update(dict(d_model=32, num_layers=1, mlp_dim=64, codebook_size=16, text_vocab_size=10, ctc_rate=2))
    model = task.build_model(config, nnx.Rngs(0))
    audio = jnp.asarray(np.random.RandomState(0).randn(2, 16000).astype(np.float32) * 0.1)
    out = nnx.jit(lambda m, a, n: m(*m.features(a, n)))(model, audio, jnp.asarray([16000, 8000]))
    tokens = out["token_mask"].shape[1]
    assert out["ctc_logits"].shape == (2, 2 * tokens, 10)
    np.testing.assert_array_equal(out["ctc_mask"], jnp.repeat(out["token_mask"], 2, axis=1))
    assert int(out["ctc_mask"][1].sum()) == 2 * int(out["token_mask"][1].sum())


@pytest.mark.parametrize("marks", [True, False])
def test_decoding_length_bounds_admit_real_speech_at_every_corpus_rate(marks):
    """The decoder forbids EOS before min_ratio tokens a unit: real espeak speech at the corpus's fastest
    and slowest rates must fall inside the phoneme units' bounds (BPE's 2 tokens a unit did not, and
    forced every phoneme model's output 1.2-1.9x too long)."""
    vocab = PhonemeVocab.build([(t, "en") for t in TEXTS], marks=marks)
    low, high = vocab.token_ratios
    for rate in (min(RATES), max(RATES)):
        for wav, text in zip(clips([(t, Voice("en", "m3", 50, rate)) for t in TEXTS]), TEXTS):
            tokens = (wav.size / SR - 0.2) * 25  # 25 Hz tokens; the render pads 0.1 s of silence a side
            assert low < tokens / len(vocab.encode(text, "en")) < high, (rate, text)
