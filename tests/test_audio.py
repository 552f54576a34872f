"""Audio I/O validation and the JAX log-mel's match with librosa."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import soundfile as sf

from speech_jax.audio import AudioError, check_audio, load_audio, resample, save_audio
from speech_jax.audio.mel import MelSpec, frame_lengths, log_mel, mel_spectrogram

SPECS = [
    MelSpec(),  # 16 kHz, hop 320: CPU-sized configs.
    MelSpec(sample_rate=24000, n_fft=1920, hop_length=480, win_length=1920, n_mels=100),
    # win_length < n_fft and a band limit exercise window padding and the filterbank range.
    MelSpec(sample_rate=24000, n_fft=2048, hop_length=480, win_length=1200, n_mels=100,
            fmin=50.0, fmax=11000.0),
]


def _chirp(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
  t = np.arange(int(sr * seconds)) / sr
  f1 = 0.4 * sr
  y = 0.5 * np.sin(2 * np.pi * (100 * t + 0.5 * (f1 - 100) / seconds * t ** 2))
  y += 0.05 * np.random.default_rng(seed).standard_normal(t.size)
  return y.astype(np.float32)


def _librosa_mel(y: np.ndarray, spec: MelSpec) -> np.ndarray:
  mel = librosa.feature.melspectrogram(
      y=y, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
      win_length=spec.win_length, n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax,
      power=1.0, center=True)
  return mel.T[: y.size // spec.hop_length]


@pytest.mark.parametrize("spec", SPECS, ids=["16k", "24k", "24k-win1200"])
def test_log_mel_matches_librosa(spec):
  y = _chirp(spec.sample_rate, 1.37)  # Not a multiple of hop: checks the frame count rule.
  got = np.asarray(jax.jit(log_mel, static_argnums=1)(y[None], spec))[0]
  want = np.log(np.maximum(_librosa_mel(y, spec), spec.log_floor))
  assert got.shape == (y.size // spec.hop_length, spec.n_mels)
  # Observed ~1e-5; fp32 FFTs agree to a few ulps of the largest bin.
  np.testing.assert_allclose(got, want, atol=1e-4)
  mel = np.asarray(mel_spectrogram(y[None], spec))[0]
  np.testing.assert_allclose(mel, _librosa_mel(y, spec), rtol=0, atol=1e-5 * mel.max())


def test_frame_count_and_lengths():
  spec = MelSpec()
  for n in (0, 319, 320, 16000, 16321):
    assert mel_spectrogram(jnp.zeros((1, n)), spec).shape == (1, n // 320, 80)
  assert frame_lengths(16000, spec) == 50
  np.testing.assert_array_equal(frame_lengths(np.array([16000, 8159]), spec), [50, 25])
  assert spec.frame_rate == 50.0


def test_grad_finite_on_silence_and_signal():
  spec = MelSpec()
  loss = jax.jit(jax.grad(lambda a: log_mel(a, spec).sum()))
  for x in (jnp.zeros((2, 3200)), jnp.asarray(_chirp(16000, 0.2))[None]):
    assert np.all(np.isfinite(np.asarray(loss(x))))
  mag = jax.grad(lambda a: mel_spectrogram(a, spec).sum())(jnp.zeros((1, 3200)))
  assert np.all(np.isfinite(np.asarray(mag)))


def test_jit_vmap_and_dtype():
  spec = MelSpec()
  batch = jnp.asarray(np.stack([_chirp(16000, 0.5, seed) for seed in range(3)]))
  direct = log_mel(batch, spec)
  mapped = jax.jit(jax.vmap(lambda a: log_mel(a[None], spec)[0]))(batch)
  np.testing.assert_allclose(np.asarray(mapped), np.asarray(direct), atol=1e-5)
  half = log_mel(batch.astype(jnp.bfloat16), spec)
  assert half.dtype == jnp.float32


def test_spec_from_config_and_validation():
  ml_collections = pytest.importorskip("ml_collections")
  cfg = ml_collections.ConfigDict(
      {"sample_rate": 24000, "hop_length": 480, "n_fft": 1920, "win_length": 1920, "other": 1})
  spec = MelSpec.from_config(cfg)
  assert (spec.sample_rate, spec.hop_length, spec.n_mels) == (24000, 480, 80)
  assert hash(spec) == hash(MelSpec.from_config(dict(cfg)))
  with pytest.raises(ValueError):
    MelSpec(n_fft=512)  # win_length 1024 > n_fft.


# --- I/O ---------------------------------------------------------------------------------------


def _write(path, audio, sr=16000, subtype="PCM_16"):
  sf.write(path, audio, sr, subtype=subtype)
  return str(path)


def test_load_stereo_downmix(tmp_path):
  left = _chirp(16000, 0.5)
  path = _write(tmp_path / "stereo.wav", np.stack([left, -0.5 * left], axis=1), subtype="FLOAT")
  audio, sr = load_audio(path)
  assert sr == 16000 and audio.dtype == np.float32 and audio.ndim == 1
  np.testing.assert_allclose(audio, 0.25 * left, atol=1e-6)


def test_load_resamples(tmp_path):
  tone = lambda sr: (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
  path = _write(tmp_path / "a.wav", tone(24000), sr=24000, subtype="FLOAT")
  audio, sr = load_audio(path, target_sr=16000)
  assert sr == 16000 and audio.dtype == np.float32 and audio.size == 16000
  # Away from the edges (filter transients) the resampled tone is the tone at 16 kHz.
  np.testing.assert_allclose(audio[800:-800], tone(16000)[800:-800], atol=1e-3)
  np.testing.assert_array_equal(resample(audio, 16000, 16000), audio)


def test_save_roundtrip_and_int16(tmp_path):
  y = _chirp(16000, 0.25)
  save_audio(tmp_path / "out.wav", y, 16000)
  assert sf.info(tmp_path / "out.wav").subtype == "PCM_16"
  back, _ = load_audio(tmp_path / "out.wav")
  np.testing.assert_allclose(back, y, atol=1 / 32768 + 1e-6)
  pcm = (y * 32767).astype(np.int16)
  np.testing.assert_allclose(check_audio(pcm, 16000), pcm / 32768.0, atol=1e-7)


def _bad_files(tmp_path):
  corrupt = tmp_path / "corrupt.wav"
  corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio" * 4)
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  nan = _chirp(16000, 0.1)
  nan[7] = np.nan
  return {
      "corrupt": (str(corrupt), "corrupt"),
      "empty-bytes": (str(empty), "empty"),
      "no-frames": (_write(tmp_path / "noframes.wav", np.zeros((0, 1), np.float32)), "empty"),
      "nan": (_write(tmp_path / "nan.wav", nan, subtype="FLOAT"), "non-finite"),
      "silent": (_write(tmp_path / "silent.wav", np.zeros(1600, np.float32)), "silent"),
      "channels": (_write(tmp_path / "three.wav", np.random.rand(1600, 3) - 0.5), "channels"),
      "missing": (str(tmp_path / "missing.wav"), "no such file"),
  }


@pytest.mark.parametrize("case", ["corrupt", "empty-bytes", "no-frames", "nan", "silent",
                                  "channels", "missing"])
def test_bad_audio_raises_with_file_name(tmp_path, case):
  path, reason = _bad_files(tmp_path)[case]
  with pytest.raises(AudioError) as info:
    load_audio(path)
  assert path in str(info.value) and reason in str(info.value)


def test_check_audio_in_memory():
  with pytest.raises(AudioError, match="clip-7.*too short"):
    check_audio(_chirp(16000, 0.1), 16000, name="clip-7", min_seconds=0.5)
  with pytest.raises(AudioError, match="silent"):
    check_audio(np.full(100, 1e-5, np.float32), 16000)
  assert check_audio(np.full(100, 1e-5, np.float32), 16000, min_peak=1e-6).shape == (100,)
  with pytest.raises(AudioError, match="sample rate"):
    check_audio(_chirp(16000, 0.1), 0)


def test_vtlp_moves_a_tone_by_its_factor_and_factor_one_is_the_identity():
    """`warp_log_mel`: a 1 kHz tone stretched by 1.1 peaks in the 1.1 kHz tone's filter, by 1/1.1 in the
    909 Hz tone's; each row takes its own factor; 1 returns the input."""
    from speech_jax.audio.vtlp import mel_centers_hz, random_factors, warp_log_mel
    spec = MelSpec(sample_rate=16000, n_fft=1024, hop_length=320, win_length=1024, n_mels=80)
    t = np.arange(16000) / 16000
    tones = jnp.asarray(np.stack([np.sin(2 * np.pi * f * t) for f in (1000, 1100, 909.1)]).astype(np.float32))
    mel = log_mel(tones, spec)[:, 10:40]
    warped = warp_log_mel(mel[:1].repeat(3, 0), jnp.asarray([1.1, 1.0, 1 / 1.1]), spec)
    peak = lambda m: int(jnp.argmax(m.mean(0)))  # noqa: E731
    assert peak(warped[0]) == peak(mel[1]) != peak(mel[0])
    assert peak(warped[2]) == peak(mel[2]) != peak(mel[0])
    np.testing.assert_allclose(warped[1], mel[0], atol=1e-5)
    assert mel_centers_hz(spec).shape == (80,)
    f = random_factors(jax.random.key(0), 1000, 0.1)
    assert 0.9 <= float(f.min()) < 0.92 and 1.08 < float(f.max()) <= 1.1
