"""Vocal tract length perturbation (Jaitly & Hinton 2013) of a log-mel spectrogram.

A voice's formants sit higher or lower with its vocal tract's length; stretching each utterance's frequency
axis by a random factor shows a model more voices than its corpus has. With a handful of training voices a
language, which spectral differences are the voice and which the phoneme is what an encoder must learn to
read an unseen voice (docs/what_limits_quality.md).
"""
import jax
import jax.numpy as jnp
import librosa
import numpy as np

from speech_jax.audio.mel import MelSpec


def mel_centers_hz(spec: MelSpec) -> np.ndarray:
    """[n_mels] the filterbank's centre frequencies (librosa's Slaney scale, as `log_mel`'s basis)."""
    fmax = spec.sample_rate / 2 if spec.fmax is None else spec.fmax
    return librosa.mel_frequencies(spec.n_mels + 2, fmin=spec.fmin, fmax=fmax)[1:-1].astype(np.float32)


def warp_log_mel(mel: jax.Array, factors: jax.Array, spec: MelSpec) -> jax.Array:
    """log-mel [B, F, M], factors [B] -> each row's spectrum stretched by its factor: the value at centre
    frequency f is the input's at f / factor (> 1: formants move up), linear between the filters' centres and
    held at the edges. Factor 1 returns the input."""
    centers = jnp.asarray(mel_centers_hz(spec))
    # Fractional filter index of each source frequency, per row.
    src = jax.vmap(lambda a: jnp.interp(centers / a, centers, jnp.arange(spec.n_mels, dtype=jnp.float32)))(factors)
    lo = jnp.clip(jnp.floor(src).astype(jnp.int32), 0, spec.n_mels - 2)
    w = jnp.clip(src - lo, 0.0, 1.0)[:, None, :]
    take = lambda idx: jnp.take_along_axis(mel, jnp.broadcast_to(idx[:, None, :], mel.shape), axis=2)  # noqa: E731
    return (1.0 - w) * take(lo) + w * take(lo + 1)


def random_factors(rng: jax.Array, batch: int, max_warp: float) -> jax.Array:
    """[batch] factors drawn uniformly from [1 - max_warp, 1 + max_warp]."""
    return jax.random.uniform(rng, (batch,), minval=1.0 - max_warp, maxval=1.0 + max_warp)
