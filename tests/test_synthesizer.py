"""The Synthesizer from trained workdirs: zero-shot and one-shot, references in any form, bad input.

The tiny stages are barely trained, so the audio is noise: these tests check lengths, determinism,
what goes into the model and the errors, not how it sounds.
"""
import jax
import numpy as np
import pytest
import soundfile as sf

from speech_jax.audio.io import AudioError
from speech_jax.cli import main
from speech_jax.infer.synthesizer import TEMPERATURE, Synthesizer
from speech_jax.infer.text_split import split_text
from speech_jax.text import TextError
from tests.stages import voice

SR = 16000




@pytest.fixture(scope="module")
def synth(tiny_stages):
    return Synthesizer.from_workdirs(tokenizer=tiny_stages["tokenizer"], ar=tiny_stages["ar"],
                                     flow_matching=tiny_stages["flow_matching"])


@pytest.fixture(scope="module")
def ref():
    return voice(1.5)


@pytest.fixture(scope="module")
def zero_shot(synth, ref):
    return synth.run("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0)


def _check_lengths(synth, result):
    """Each piece: length rules of the AR decoder; the waveform: 2 frames of `hop` samples a token,
    pieces joined by the pause, no prompt audio."""
    spec = synth.spec
    for piece, tokens in zip(result.pieces, result.tokens):
        n = len(synth.encode(piece))
        assert 2 * n <= len(tokens) <= min(20 * n, spec.max_new_tokens) - 1
        assert tokens.min() >= 0 and tokens.max() < spec.codebook_size
    pause = round(synth.pause_seconds * SR)
    expected = sum(2 * spec.hop * len(t) for t in result.tokens) + pause * (len(result.tokens) - 1)
    assert result.wav.shape == (expected,)
    assert result.wav.dtype == np.float32 and np.all(np.isfinite(result.wav))
    assert np.max(np.abs(result.wav)) <= 1.0


def test_zero_shot_gives_audio_of_plausible_length(synth, zero_shot):
    assert zero_shot.pieces == ["Hello there, how are you?"] and zero_shot.prompt_tokens == 0
    _check_lengths(synth, zero_shot)
    assert np.std(zero_shot.wav) > 0


def test_same_seed_same_audio_other_seed_other_audio(synth, ref, zero_shot):
    again = synth.synthesize("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0)
    np.testing.assert_array_equal(again, zero_shot.wav)
    other = synth.synthesize("Hello there, how are you?", ref, reference_sample_rate=SR, seed=1)
    assert other.shape != zero_shot.wav.shape or not np.array_equal(other, zero_shot.wav)


def test_fm_temperature_scales_flow_matchings_noise_only(synth, ref, zero_shot):
    """The same seed's tokens, rendered from smaller noise: other audio; at 0 the noise's key no longer
    matters, so the audio is what the tokens and the voice alone give."""
    cooler = synth.run("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0, fm_temperature=0.5)
    assert [t.tolist() for t in cooler.tokens] == [t.tolist() for t in zero_shot.tokens]
    assert cooler.wav.shape == zero_shot.wav.shape and not np.allclose(cooler.wav, zero_shot.wav)
    still = synth.run("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0, fm_temperature=0.0)
    np.testing.assert_allclose(still.wav, synth._render(synth.backend, still.tokens, synth._prompt(
        synth.backend, synth.load_reference(ref, SR), None, None, True), jax.random.key(7), 0.7, 0.0)[0],
        atol=1e-6)
    with pytest.raises(ValueError, match="fm_temperature"):
        synth.synthesize("Hello.", ref, reference_sample_rate=SR, fm_temperature=-1.0)


def test_one_shot_puts_the_prompt_in_context_and_leaves_it_out_of_the_output(synth, ref, zero_shot):
    one = synth.run("Hello there, how are you?", ref, reference_sample_rate=SR,
                    prompt_text="This is my voice.", seed=0)
    # The whole 1.5 s reference is the prompt: 25 tokens a second.
    assert one.prompt_tokens == len(ref) // (2 * synth.spec.hop) == 37
    _check_lengths(synth, one)  # the output covers the generated tokens only
    assert one.wav.shape != zero_shot.wav.shape or not np.array_equal(one.wav, zero_shot.wav)


def test_acoustic_prompt_prompts_flow_matching_only(synth, ref):
    """Zero-shot with the reference's tokens and latent as flow matching's prompt: the AR's context is unchanged
    (the same tokens from the same seed), the rendering is not, and the output leaves the prompt out."""
    plain, prompted = (synth.run("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0,
                                 acoustic_prompt=on) for on in (False, True))
    assert plain.prompt_tokens == prompted.prompt_tokens == 0
    for a, b in zip(prompted.tokens, plain.tokens, strict=True):
        np.testing.assert_array_equal(a, b)
    _check_lengths(synth, prompted)
    assert not np.allclose(prompted.wav, plain.wav)


def test_reference_in_any_rate_and_channel_layout(synth, ref, zero_shot, tmp_path):
    text = "Hello there, how are you?"
    # Identical channels downmix to the mono reference exactly.
    stereo = synth.synthesize(text, np.stack([ref, ref], axis=1), reference_sample_rate=SR, seed=0)
    np.testing.assert_array_equal(stereo, zero_shot.wav)
    for sr in (22050, 44100):
        path = tmp_path / f"ref_{sr}.wav"
        x = voice(1.5, sr)
        sf.write(path, np.stack([x, 0.5 * x], axis=1), sr)
        from_file = synth.run(text, str(path), seed=0)
        _check_lengths(synth, from_file)
        from_array = synth.synthesize(text, x, reference_sample_rate=sr, seed=0)
        assert from_array.dtype == np.float32 and np.all(np.isfinite(from_array))


def test_long_zero_shot_reference_is_cropped(synth, zero_shot):
    """The speaker encoders read the first `ref_samples`: a longer reference gives the same audio as its crop."""
    long = voice(synth.spec.ref_samples / SR + 1.0, seed=3)
    a = synth.synthesize("Hello there, how are you?", long, reference_sample_rate=SR, seed=0)
    b = synth.synthesize("Hello there, how are you?", long[:synth.spec.ref_samples], reference_sample_rate=SR, seed=0)
    np.testing.assert_array_equal(a, b)


def test_unusable_references_are_clear_errors(synth, ref, tmp_path):
    text = "Hello there."
    cases = {"silent": np.zeros(SR, np.float32), "too short": ref[:SR // 4],
             "non-finite": np.where(np.arange(len(ref)) == 100, np.nan, ref).astype(np.float32)}
    for message, audio in cases.items():
        with pytest.raises(AudioError, match=message):
            synth.synthesize(text, audio, reference_sample_rate=SR)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wav file" * 10)
    with pytest.raises(AudioError, match="unreadable"):
        synth.synthesize(text, str(garbage))
    with pytest.raises(AudioError, match="no such file"):
        synth.synthesize(text, str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="reference_sample_rate"):
        synth.synthesize(text, ref)
    too_long = voice(synth.spec.ref_samples / SR + 0.5)
    with pytest.raises(ValueError, match="one-shot reference is .* trim it"):
        synth.synthesize(text, too_long, reference_sample_rate=SR, prompt_text="Words.")
    with pytest.raises(ValueError, match="prompt_text has"):
        synth.synthesize(text, ref, reference_sample_rate=SR, prompt_text="word " * 200)


def test_empty_text_and_bad_settings_are_clear_errors(synth, ref):
    for text, message in (("", "empty text"), ("  \n ", "empty text"), ("... !", "no speakable text"),
                          ([], "no text")):
        with pytest.raises(ValueError, match=message):
            synth.synthesize(text, ref, reference_sample_rate=SR)
    with pytest.raises(ValueError, match="top_p"):
        synth.synthesize("Hello.", ref, reference_sample_rate=SR, top_p=0.0)


def test_long_text_is_split_into_sentences_and_batched(synth, ref):
    text = "The first sentence is here. Is this the second one? Yes! 这是第四句。"
    result = synth.run(text, ref, reference_sample_rate=SR, seed=0)
    assert result.pieces == ["The first sentence is here.", "Is this the second one?", "Yes!", "这是第四句。"]
    _check_lengths(synth, result)  # four pieces in one batch, joined by pauses
    # One sentence over the text budget is cut at commas, then spaces, each piece within budget.
    words = " ".join(f"word{i}" for i in range(40))
    long = f"{words}, and then {words} again."
    pieces = synth.split(long)
    assert len(pieces) > 2 and all(len(synth.encode(p)) <= synth.spec.text_len for p in pieces)
    assert " ".join(pieces).replace(" ", "") == long.replace(" ", "")


def test_best_of_n_keeps_the_sample_the_tokenizer_reads_as_the_text(synth, ref):
    text = "Hello there, how are you?"
    best = synth.run(text, ref, reference_sample_rate=SR, seed=0, candidates=4)
    _check_lengths(synth, best)
    # The same four samples (run's key for the first batch), scored by the tokenizer's CTC head.
    prompt = synth._prompt(synth.backend, synth.load_reference(ref, SR), None, None, acoustic_prompt=False)
    k_ar, _ = jax.random.split(jax.random.fold_in(jax.random.key(0), 0))
    rows = synth._generate(synth.backend, [text] * 4, None, prompt, k_ar, TEMPERATURE, 0.8)
    scores = synth._score(synth.backend, rows, [text] * 4, None)
    assert len({tuple(r) for r in rows}) > 1 and np.all(np.isfinite(scores))
    np.testing.assert_array_equal(best.tokens[0], rows[int(np.argmin(scores))])
    with pytest.raises(ValueError, match="candidates"):
        synth.synthesize(text, ref, reference_sample_rate=SR, candidates=0)


def test_ctc_guidance_samples_what_the_tokenizer_reads_as_the_text(synth, ref):
    """Guided samples say the text better by the tokenizer's CTC head than unguided ones from the same keys."""
    text = "Hello there, how are you?"
    prompt = synth._prompt(synth.backend, synth.load_reference(ref, SR), None, None, acoustic_prompt=False)
    key = jax.random.key(0)
    plain = synth._generate(synth.backend, [text] * 4, None, prompt, key, TEMPERATURE, 0.8)
    guided = synth._generate(synth.backend, [text] * 4, None, prompt, key, TEMPERATURE, 0.8, guidance=(3.0, 2.0))
    nll = lambda rows: float(np.mean(synth._score(synth.backend, rows, [text] * 4, None)))  # noqa: E731
    assert nll(guided) < nll(plain) - 0.1, (nll(guided), nll(plain))
    with pytest.raises(ValueError, match="ctc_guidance"):
        synth.synthesize(text, ref, reference_sample_rate=SR, ctc_guidance=-1.0)


def test_text_split_levels():
    count = lambda s: len(s.split())  # noqa: E731  one id a word
    assert split_text("One two. Three four five six, seven eight.", count, 3) == \
        ["One two.", "Three four five", "six,", "seven eight."]
    assert split_text("3.5 is fine? Yes!!", count, 8) == ["3.5 is fine?", "Yes!!"]
    assert split_text("这是一个很长的句子", len, 4) == ["这是一个", "很长的句", "子"]
    with pytest.raises(TextError, match="no speakable"):
        split_text("?!", count, 3)


def test_cli_synthesize_from_workdirs(tiny_stages, synth, ref, zero_shot, tmp_path, capsys):
    path = tmp_path / "ref.wav"
    sf.write(path, ref, SR, subtype="FLOAT")  # exactly `ref`
    out = tmp_path / "out" / "hello.wav"
    stages = ["--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
              "--flow-matching", tiny_stages["flow_matching"]]
    rc = main(["synthesize", "--text", "Hello there, how are you?", "--reference", str(path), "--out", str(out),
               "--seed", "0", *stages])
    assert rc == 0
    wav, sr = sf.read(out, dtype="float32")
    assert sr == SR
    np.testing.assert_allclose(wav, zero_shot.wav, rtol=0, atol=1e-4)  # written as 16-bit PCM
    rc = main(["synthesize", "--text", "Hello there, how are you?", "--reference", str(path), "--out", str(out),
               "--seed", "0", "--no-acoustic-prompt", *stages])
    plain = synth.synthesize("Hello there, how are you?", ref, reference_sample_rate=SR, seed=0, acoustic_prompt=False)
    assert rc == 0
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], plain, rtol=0, atol=1e-4)
    rc = main(["synthesize", "--text", "Hi.", "--reference", str(tmp_path / "nope.wav"), "--out", str(out), *stages])
    assert rc == 2 and "no such file" in capsys.readouterr().err
    rc = main(["synthesize", "--text", "Hi.", "--reference", str(path), "--out", str(out), "--ar", "x"])
    assert rc == 2 and "--bundle" in capsys.readouterr().err
