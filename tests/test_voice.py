import numpy as np
import pytest

from speech_jax.infer.voice import load_voice, save_voice


def test_voice_file_round_trips(tmp_path):
    v = np.random.default_rng(0).normal(size=16).astype(np.float32)
    path = save_voice(str(tmp_path / "a"), v, made_by="pvc", ar_workdir="w", ar_step=3)
    voice = load_voice(path, spk_dim=16)
    np.testing.assert_array_equal(voice.v, v)
    assert voice.metadata == {"made_by": "pvc", "ar_workdir": "w", "ar_step": 3, "spk_dim": 16}


def test_bad_voice_files_fail_clearly(tmp_path):
    path = save_voice(str(tmp_path / "a.npz"), np.zeros(16, np.float32))
    with pytest.raises(ValueError, match="spk_dim=16"):
        load_voice(path, spk_dim=32)
    (tmp_path / "b.npz").write_bytes(b"not a voice")
    with pytest.raises(ValueError, match="not a voice file"):
        load_voice(str(tmp_path / "b.npz"))
    with pytest.raises(ValueError, match="vector"):
        save_voice(str(tmp_path / "c"), np.zeros((2, 16)))
