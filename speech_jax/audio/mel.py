"""STFT and log-mel spectrogram in JAX, numerically matching `librosa.feature.melspectrogram`.

Runs inside jitted train steps (spec as a static argument), is differentiable (mel losses for the
Flow-VAE decoder) and always computes in fp32, whatever the input dtype.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import librosa
import numpy as np

# Added under the square root of |X|^2 so d|X| stays finite where X == 0; its effect on the
# magnitude (1e-6) is below any useful log floor.
_MAG_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class MelSpec:
  """Mel analysis settings; frozen, so hashable and usable as a static jit argument."""

  sample_rate: int = 16000
  n_fft: int = 1024
  hop_length: int = 320
  win_length: int = 1024
  n_mels: int = 80
  fmin: float = 0.0
  fmax: float | None = None  # None: sample_rate / 2, as librosa.
  power: float = 1.0  # 1: magnitude, 2: power.
  log_floor: float = 1e-5

  def __post_init__(self):
    if min(self.sample_rate, self.n_fft, self.hop_length, self.win_length, self.n_mels) <= 0:
      raise ValueError(f"MelSpec sizes must be positive: {self}")
    if self.win_length > self.n_fft:
      raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
    nyquist = self.sample_rate / 2
    if not 0 <= self.fmin < (nyquist if self.fmax is None else self.fmax) <= nyquist:
      raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got {self}")
    if self.power <= 0 or self.log_floor <= 0:
      raise ValueError(f"power and log_floor must be positive: {self}")

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any] | Any) -> "MelSpec":
    """Builds a spec from a ConfigDict (or dict); fields it lacks keep their defaults.

    Keys that are not MelSpec fields are ignored, so an `audio` config block can hold more.
    """
    kwargs = {}
    for field in dataclasses.fields(cls):
      if field.name in cfg:
        value = cfg[field.name]
        if value is not None:  # Casts keep the spec hashable and jit keys stable (16000 == 16000.0).
          value = int(value) if field.type == "int" else float(value)
        kwargs[field.name] = value
    return cls(**kwargs)

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length


def frame_lengths(num_samples, spec: MelSpec):
  """Frames covering `num_samples` valid samples (ints or arrays): floor(n / hop), for masks."""
  if isinstance(num_samples, (list, tuple)):
    num_samples = np.asarray(num_samples)
  return num_samples // spec.hop_length


@functools.lru_cache(maxsize=None)
def _mel_basis(spec: MelSpec) -> np.ndarray:
  """[n_bins, n_mels] filterbank.

  Built by librosa itself (Slaney mel scale, Slaney area norm) rather than re-derived, so mels
  match librosa-trained references and vocoders exactly; it is a host-side numpy constant that
  jit folds into the graph, computed once per spec.
  """
  fb = librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels,
                           fmin=spec.fmin, fmax=spec.fmax)
  return np.ascontiguousarray(fb.T, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _window(spec: MelSpec) -> np.ndarray:
  """Periodic Hann of win_length, zero-padded to n_fft about the centre (librosa's layout)."""
  n = np.arange(spec.win_length)
  win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / spec.win_length)
  left = (spec.n_fft - spec.win_length) // 2
  return np.pad(win, (left, spec.n_fft - spec.win_length - left)).astype(np.float32)


def _frames(audio: jax.Array, spec: MelSpec) -> jax.Array:
  """[..., T] -> [..., T // hop, n_fft] centred frames, zero padded like librosa (pad_mode="constant").

  Avoids a gather: the padded signal is cut into hop-sized blocks and frame i is blocks
  i .. i + r - 1 laid end to end (r = ceil(n_fft / hop)), truncated to n_fft. That is r
  contiguous slices, cheap forward and backward on every backend.
  """
  hop, n_fft = spec.hop_length, spec.n_fft
  num_frames = audio.shape[-1] // hop
  r = math.ceil(n_fft / hop)
  needed = (num_frames + r - 1) * hop
  left = n_fft // 2
  right = max(0, needed - left - audio.shape[-1])
  # Samples past T + n_fft // 2 only land in the truncated tail of the last frames.
  padded = jnp.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(left, right)])[..., :needed]
  blocks = padded.reshape(*audio.shape[:-1], num_frames + r - 1, hop)
  frames = jnp.concatenate([blocks[..., k:k + num_frames, :] for k in range(r)], axis=-1)
  return frames[..., :n_fft]


def stft(audio: jax.Array, spec: MelSpec) -> jax.Array:
  """[..., T] -> [..., T // hop, n_fft // 2 + 1] complex STFT (complex64)."""
  audio = jnp.asarray(audio).astype(jnp.float32)
  return jnp.fft.rfft(_frames(audio, spec) * _window(spec), n=spec.n_fft, axis=-1)


def stft_magnitude(audio: jax.Array, spec: MelSpec) -> jax.Array:
  """[..., T] -> [..., T // hop, n_fft // 2 + 1] of |STFT| ** power, fp32."""
  spectrum = stft(audio, spec)
  energy = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  if spec.power == 2.0:
    return energy
  return (energy + _MAG_EPS) ** (spec.power / 2.0)


def mel_spectrogram(audio: jax.Array, spec: MelSpec) -> jax.Array:
  """[B, T] (any leading dims) audio -> [B, T // hop, n_mels] mel spectrogram, fp32."""
  mag = stft_magnitude(audio, spec)
  # HIGHEST: TPUs otherwise run fp32 matmuls with bf16 passes, losing the librosa match.
  return jnp.matmul(mag, _mel_basis(spec), precision=jax.lax.Precision.HIGHEST)


def log_mel(audio: jax.Array, spec: MelSpec) -> jax.Array:
  """Natural log of the mel spectrogram, floored at `spec.log_floor`."""
  return jnp.log(jnp.maximum(mel_spectrogram(audio, spec), spec.log_floor))


def utterance_normalise(mel: jax.Array, frames: jax.Array, eps: float = 1e-3) -> jax.Array:
  """Per-utterance mean and variance normalisation of each channel over its valid frames (CMVN), the
  classic speaker- and channel-robust front end: a voice's spectral tilt and loudness move the statistics,
  not what is left."""
  w = frames[..., None].astype(mel.dtype)
  n = jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
  mean = jnp.sum(mel * w, axis=1, keepdims=True) / n
  var = jnp.sum(jnp.square(mel - mean) * w, axis=1, keepdims=True) / n
  return (mel - mean) * jax.lax.rsqrt(var + eps) * w
