"""Inverse STFT by overlap-add, for decoders that predict a spectrum at frame rate (Vocos).

Written here rather than taken from `jax.scipy.signal.istft`: that one frames its own way (its own
centring and boundary padding) and normalises by the window sum; ours must be the exact inverse of the
framing `speech_jax.audio.mel` analyses with (frame f centred on sample f·hop, periodic Hann), emit
exactly F·hop samples for F frames, and run as a few reshapes and slices (no scatter) on every backend.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def hann(n: int) -> np.ndarray:
    """Periodic Hann: with n = r·hop (r ≥ 2 even) its squares overlap-add to a constant."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def overlap_add(frames: jax.Array, hop: int) -> jax.Array:
    """[..., F, r·hop] frames centred on samples f·hop -> [..., F·hop] samples (their sum).

    Frame f covers samples [(f − r/2)·hop, (f + r/2)·hop): its chunk k lands in hop-block f − r/2 + k.
    Blocks outside [0, F) are dropped (the first and last r/2 blocks see fewer frames)."""
    *lead, num_frames, n_fft = frames.shape
    r = n_fft // hop
    if r * hop != n_fft or r % 2:
        raise ValueError(f"n_fft {n_fft} must be an even multiple of hop {hop}")
    chunks = frames.reshape(*lead, num_frames, r, hop)
    pad = [(0, 0)] * len(lead)
    total = sum(jnp.pad(chunks[..., k, :], pad + [(k, r - 1 - k), (0, 0)]) for k in range(r))
    return total[..., r // 2:r // 2 + num_frames, :].reshape(*lead, num_frames * hop)


def istft(spectrum: jax.Array, hop: int) -> jax.Array:
    """[..., F, n_fft // 2 + 1] complex -> [..., F·hop] real: inverse FFT, Hann synthesis window, and
    overlap-add normalised by the (constant) sum of squared windows, so istft(stft(x)) = x inside."""
    n_fft = 2 * (spectrum.shape[-1] - 1)
    window = hann(n_fft)
    frames = jnp.fft.irfft(spectrum, n=n_fft, axis=-1) * window
    return overlap_add(frames, hop) / float(np.sum(window ** 2) / hop)
