"""Audio: wav I/O and validation (`io`), JAX STFT / log-mel matching librosa (`mel`)."""

from speech_jax.audio.io import AudioError, check_audio, load_audio, resample, save_audio
