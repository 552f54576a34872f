"""Waveform I/O: read, validate, resample and write audio as float32 mono.

Every way audio can be unusable (unreadable, empty, NaN, silent, too many channels) raises
`AudioError` naming the source, so data pipelines can skip or report a file without losing the run.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

# Below this peak a clip is treated as silence: 1e-4 is about -80 dBFS, under 16-bit dither.
DEFAULT_MIN_PEAK = 1e-4


class AudioError(ValueError):
  """Audio that cannot be used; the message names the source and the reason."""

  def __init__(self, reason: str, source: str | os.PathLike | None = None):
    self.reason = reason
    self.source = None if source is None else os.fspath(source)
    super().__init__(f"{self.source}: {reason}" if self.source else reason)


def _check_rate(sample_rate, name) -> int:
  try:
    ok = not isinstance(sample_rate, bool) and int(sample_rate) == sample_rate > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}", name)
  return int(sample_rate)


def to_float32(audio: np.ndarray, name: str = "<array>") -> np.ndarray:
  """Integer PCM is scaled to [-1, 1); floats are cast."""
  if np.issubdtype(audio.dtype, np.floating):
    return audio.astype(np.float32, copy=False)
  if audio.dtype == np.uint8:  # 8-bit wav is offset binary.
    return (audio.astype(np.float32) - 128.0) / 128.0
  if np.issubdtype(audio.dtype, np.signedinteger):
    return audio.astype(np.float32) / float(2 ** (8 * audio.dtype.itemsize - 1))
  raise AudioError(f"unsupported sample dtype {audio.dtype}", name)


def check_audio(
    audio,
    sample_rate: int,
    name: str = "<array>",
    min_seconds: float = 0.0,
    *,
    max_channels: int = 2,
    min_peak: float = DEFAULT_MIN_PEAK,
) -> np.ndarray:
  """Validates an in-memory waveform and returns it as float32 mono.

  `audio` is `[frames]` or `[frames, channels]` (soundfile's layout); up to `max_channels`
  channels are averaged. Raises AudioError when empty, shorter than `min_seconds`, non-finite,
  silent (peak < `min_peak`) or with too many channels.
  """
  sample_rate = _check_rate(sample_rate, name)
  audio = np.asarray(audio)
  if audio.ndim == 2:
    if audio.shape[1] == 0:
      raise AudioError("audio has 0 channels", name)
    if audio.shape[1] > max_channels:
      raise AudioError(
          f"{audio.shape[1]} channels, at most {max_channels} allowed "
          "(arrays are [frames, channels])", name)
    audio = to_float32(audio, name)
    audio = audio.mean(axis=1, dtype=np.float32)
  elif audio.ndim == 1:
    audio = to_float32(audio, name)
  else:
    raise AudioError(f"expected [frames] or [frames, channels], got shape {audio.shape}", name)

  if audio.size == 0:
    raise AudioError("empty audio (0 samples)", name)
  if not np.all(np.isfinite(audio)):
    raise AudioError(f"{int(np.sum(~np.isfinite(audio)))} non-finite samples (NaN or inf)", name)
  seconds = audio.size / sample_rate
  if seconds < min_seconds:
    raise AudioError(f"too short: {seconds:.3f} s < {min_seconds} s", name)
  peak = float(np.max(np.abs(audio)))
  if peak < min_peak:
    raise AudioError(f"silent: peak {peak:.2e} < {min_peak:.0e}", name)
  return np.ascontiguousarray(audio)


def resampled_length(samples: int, sr_in: int, sr_out: int) -> int:
  """The length `resample` gives `samples` frames (soxr rounds half up), known without the audio."""
  return samples if sr_in == sr_out else (2 * samples * sr_out + sr_in) // (2 * sr_in)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  """Resamples `[frames]` or `[frames, channels]` float audio with soxr; float32 out."""
  sr_in, sr_out = _check_rate(sr_in, None), _check_rate(sr_out, None)
  audio = np.asarray(audio, dtype=np.float32)
  if sr_in == sr_out:
    return audio
  return soxr.resample(audio, sr_in, sr_out).astype(np.float32, copy=False)


def _source_name(path) -> str:
  """A printable name for a path or an open file object."""
  if isinstance(path, (str, os.PathLike)):
    return os.fspath(path)
  return str(getattr(path, "name", "<file object>"))


def load_audio(
    path: str | os.PathLike,
    target_sr: int | None = None,
    max_channels: int = 2,
    *,
    min_peak: float = DEFAULT_MIN_PEAK,
    min_seconds: float = 0.0,
) -> tuple[np.ndarray, int]:
  """Reads an audio file as float32 mono, resampled to `target_sr` when given.

  `path` is a path or a file object soundfile can read. Returns `(audio, sample_rate)`. Raises AudioError on anything unusable (see `check_audio`).
  """
  name = _source_name(path)
  if isinstance(path, (str, os.PathLike)):
    if not os.path.exists(path):
      raise AudioError("no such file", name)
    if not os.path.isfile(path):
      raise AudioError("not a regular file", name)
    if os.path.getsize(path) == 0:
      raise AudioError("empty file (0 bytes)", name)
  try:
    data, sr = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError) as e:
    raise AudioError(f"unreadable or corrupt audio ({e})", name) from e
  # Validate before resampling: soxr would smear a NaN across its whole filter length.
  audio = check_audio(data, sr, name=name, min_seconds=min_seconds,
                      max_channels=max_channels, min_peak=min_peak)
  if target_sr is not None:
    target_sr = _check_rate(target_sr, name)
    audio, sr = resample(audio, sr, target_sr), target_sr
  return audio, int(sr)


def save_audio(path: str | os.PathLike, audio, sample_rate: int) -> None:
  """Writes `[frames]` or `[frames, channels]` audio as 16-bit PCM wav (floats clipped to [-1, 1])."""
  name = _source_name(path)
  sample_rate = _check_rate(sample_rate, name)
  audio = np.asarray(audio)
  if audio.ndim not in (1, 2) or audio.size == 0:
    raise AudioError(f"cannot save audio of shape {audio.shape}", name)
  if audio.dtype != np.int16:
    audio = to_float32(audio, name)
    if not np.all(np.isfinite(audio)):
      raise AudioError("cannot save non-finite samples", name)
    audio = np.clip(audio, -1.0, 1.0)
  sf.write(path, audio, sample_rate, subtype="PCM_16", format="WAV")
