import numpy as np
import pytest

from speech_jax.infer.voice import load_voice, save_voice
from tests.stages import voice


def test_voice_file_round_trips(tmp_path):
    v = np.random.default_rng(0).normal(size=16).astype(np.float32)
    path = save_voice(str(tmp_path / "a"), v, made_by="pvc", ar_workdir="w", ar_step=3)
    voice = load_voice(path, spk_dim=16)
    np.testing.assert_array_equal(voice.v, v)
    assert voice.metadata == {"made_by": "pvc", "ar_workdir": "w", "ar_step": 3, "spk_dim": 16}


def test_a_voice_with_its_own_flow_matching_vector_round_trips(tmp_path):
    v, v_fm = np.random.default_rng(1).normal(size=(2, 16)).astype(np.float32)
    voice = load_voice(save_voice(str(tmp_path / "a"), v, v_fm=v_fm, made_by="pvc"), spk_dim=16)
    np.testing.assert_array_equal(voice.v, v)
    np.testing.assert_array_equal(voice.flow_matching_vector, v_fm)
    # Without v_fm (a T2V voice, or one made before v_fm existed) flow matching reads v.
    np.testing.assert_array_equal(load_voice(save_voice(str(tmp_path / "b"), v)).flow_matching_vector, v)
    with pytest.raises(ValueError, match="v_fm has shape"):
        save_voice(str(tmp_path / "c"), v, v_fm=np.zeros(8, np.float32))


def test_bad_voice_files_fail_clearly(tmp_path):
    path = save_voice(str(tmp_path / "a.npz"), np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="spk_dim=16"):
        load_voice(path, spk_dim=32)
    (tmp_path / "b.npz").write_bytes(b"not a voice")
    with pytest.raises(ValueError, match="not a voice file"):
        load_voice(str(tmp_path / "b.npz"))
    with pytest.raises(ValueError, match="vector"):
        save_voice(str(tmp_path / "c"), np.zeros((2, 16)))


# --- synthesis with a saved voice (the tiny trained stages) -----------------------------------------

SR = 16000
TEXT = "Hello there, how are you?"




@pytest.fixture(scope="module")
def synth(tiny_stages):
    from speech_jax.infer.synthesizer import Synthesizer
    return Synthesizer.from_workdirs(tokenizer=tiny_stages["tokenizer"], ar=tiny_stages["ar"],
                                     flow_matching=tiny_stages["flow_matching"])


@pytest.fixture(scope="module")
def reference_voice(tiny_stages, tmp_path_factory):
    """A reference and, saved as a voice file, the AR speaker encoder's vector of it."""
    from speech_jax.train.restore import load_model
    from speech_jax.train.tasks.pvc import mean_speaker_vector
    ref = voice(1.5)
    _, ar = load_model(tiny_stages["ar"], "ar")
    path = save_voice(str(tmp_path_factory.mktemp("voice") / "ref"), mean_speaker_vector(ar, [ref]))
    return ref, path


def test_a_voice_synthesises_what_its_reference_does(synth, reference_voice):
    ref, path = reference_voice
    # A saved voice is the reference's speaker vectors: the same as the reference without an acoustic prompt.
    a = synth.run([TEXT, "Fine, thanks."], ref, reference_sample_rate=SR, seed=2, acoustic_prompt=False)
    b = synth.run([TEXT, "Fine, thanks."], voice=path, seed=2)
    assert len(a.tokens) == len(b.tokens) == 2 and b.prompt_tokens == 0
    for ta, tb in zip(a.tokens, b.tokens):
        np.testing.assert_array_equal(ta, tb)
    np.testing.assert_allclose(b.wav, a.wav, rtol=0, atol=1e-5)


def test_v_fm_reaches_flow_matching_and_v_the_ar(synth, reference_voice, monkeypatch):
    """A voice whose v is another vector but whose v_fm is the reference's: the AR's tokens are v's, and flow
    matching is handed the reference's vector (the tiny stages' flow matching barely hears its speaker vector,
    so what it is handed is checked, not the audio)."""
    from speech_jax.infer.backend import ProgramBackend
    from speech_jax.infer.voice import Voice
    _, path = reference_voice
    ref_v = load_voice(path).v
    other = ref_v + np.random.default_rng(3).normal(scale=2.0, size=ref_v.shape).astype(np.float32)
    handed = []
    original = ProgramBackend.fm_sample

    def spy(self, *arrays):
        handed.append(np.asarray(arrays[3]))  # x0, tokens, frame_mask, spk, ...
        return original(self, *arrays)
    monkeypatch.setattr(ProgramBackend, "fm_sample", spy)
    plain = synth.run(TEXT, voice=Voice(other), seed=2)
    split = synth.run(TEXT, voice=Voice(other, v_fm=ref_v), seed=2)
    np.testing.assert_array_equal(split.tokens[0], plain.tokens[0])  # the AR read v in both
    assert len(handed) == 2
    np.testing.assert_allclose(handed[0], np.broadcast_to(other, handed[0].shape), rtol=1e-6)
    np.testing.assert_allclose(handed[1], np.broadcast_to(ref_v, handed[1].shape), rtol=1e-6)


def test_reference_or_voice_exactly_one(synth, reference_voice):
    ref, path = reference_voice
    with pytest.raises(ValueError, match="exactly one of reference, voice"):
        synth.synthesize(TEXT, ref, voice=path, reference_sample_rate=SR)
    with pytest.raises(ValueError, match="exactly one of reference, voice"):
        synth.synthesize(TEXT)
    with pytest.raises(ValueError, match="a saved voice has no recording"):
        synth.synthesize(TEXT, voice=path, prompt_text="This is my voice.")
    with pytest.raises(ValueError, match=r"finite vector \[16\]"):
        synth.synthesize(TEXT, voice=np.zeros(8, np.float32))


def test_cli_synthesizes_with_a_voice(synth, reference_voice, tiny_stages, tmp_path, capsys):
    import soundfile as sf

    from speech_jax.cli import main
    _, path = reference_voice
    stages = ["--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
              "--flow-matching", tiny_stages["flow_matching"]]
    out = str(tmp_path / "v.wav")
    assert main(["synthesize", "--text", TEXT, "--voice", path, "--out", out, "--seed", "2", *stages]) == 0
    wav, sr = sf.read(out, dtype="float32")
    assert sr == SR
    np.testing.assert_allclose(wav, synth.synthesize(TEXT, voice=path, seed=2), rtol=0, atol=1e-4)
    assert main(["synthesize", "--text", TEXT, "--out", out, *stages]) == 2
    assert "exactly one of reference, voice" in capsys.readouterr().err
