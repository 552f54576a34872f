"""Resynthesis quality: how close a decoded waveform is to the one that went in.

Host-side numpy on float32 waveforms in [-1, 1]. The estimate is always compared over the
reference's length (trimmed or zero-padded), as a codec or VAE may return a few samples more or less.
Distances (lower is better): DAC's multi-scale mel distance and the Parallel-WaveGAN multi-resolution
STFT loss (the "MS-STFT loss" of the Flow-VAE ablation). Scores (higher is better): PESQ wide band
(P.862.2, 16 kHz) and narrow band (P.862, 8 kHz), and STOI. Every metric of a non-finite estimate, and
PESQ / STOI where they cannot score (silent reference, clip too short, PESQ on a silent estimate), is NaN
with a logged warning, never an exception, so one bad utterance does not stop an evaluation; averages
skip NaNs and count them. A malformed reference (empty, not 1-D, non-finite) is a data error: ValueError.
"""

from __future__ import annotations

import functools
import logging
import warnings

import librosa
import numpy as np
import pesq as pesq_lib
import pystoi

from speech_jax.audio.io import DEFAULT_MIN_PEAK, resample
from speech_jax.eval import voicing

log = logging.getLogger(__name__)

# DAC's MelSpectrogramLoss scales: window (= n_fft, hop = window / 4) and mel bands.
DAC_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
DAC_MELS = (5, 10, 20, 40, 80, 160, 320)
MEL_FLOOR = 1e-5  # on the magnitude mel, as DAC's clamp_eps
STFT_FLOOR = 1e-7  # on the STFT magnitude, as Parallel WaveGAN


def _reference(ref) -> np.ndarray:
    ref = np.asarray(ref, dtype=np.float32)
    if ref.ndim != 1 or ref.size == 0:
        raise ValueError(f"reference must be a non-empty 1-D waveform, got shape {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError("reference has non-finite samples")
    return ref


def align(ref, est) -> tuple[np.ndarray, np.ndarray]:
    """(ref, est) as float32 1-D with est trimmed or zero-padded to the reference's length."""
    ref = _reference(ref)
    est = np.asarray(est, dtype=np.float32)
    if est.ndim != 1:
        raise ValueError(f"estimate must be a 1-D waveform, got shape {est.shape}")
    est = est[:ref.size]
    if est.size < ref.size:
        est = np.pad(est, (0, ref.size - est.size))
    return ref, est


def _finite_or_warn(est, metric: str) -> bool:
    if np.all(np.isfinite(est)):
        return True
    log.warning("%s: estimate has non-finite samples; returning NaN", metric)
    return False


def _silent(ref, metric: str) -> bool:
    """PESQ normalises loudness away, so a -120 dB hiss would score 4.64 against itself: treat a
    reference under audio.io's silence floor (peak 1e-4, about -80 dBFS) as unscorable."""
    peak = float(np.max(np.abs(ref)))
    if peak >= DEFAULT_MIN_PEAK:
        return False
    log.warning("%s: reference is silent (peak %.1e); returning NaN", metric, peak)
    return True


@functools.lru_cache(maxsize=None)
def mel_scales(sample_rate: int) -> tuple[tuple[int, int], ...]:
    """(window, n_mels) pairs: DAC's seven scales, each n_mels capped so no mel filter is empty.

    DAC (44.1 kHz) pairs windows 32..2048 with 5..320 mel bands. A filter is empty when no FFT bin falls
    under it, which happens when the window is short for the rate (FFT bins wider than the low mel
    bands); the cap is the largest n_mels <= DAC's whose librosa filterbank has no all-zero row
    (stricter than librosa's own warning, which never flags the lowest filter).
    From 8 to 44.1 kHz (so at our 16 and 24 kHz) no cap binds and all seven DAC scales are used as they
    are; at 48 kHz the two shortest windows get 4 and 9 bands.
    """
    scales = []
    for window, n_mels in zip(DAC_WINDOWS, DAC_MELS):
        while n_mels > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns about exactly what we test for
                fb = librosa.filters.mel(sr=sample_rate, n_fft=window, n_mels=n_mels)
            if np.all(fb.max(axis=1) > 0):
                break
            n_mels -= 1
        scales.append((window, n_mels))
    return tuple(scales)


def _log_mel(wav, sample_rate, window, n_mels):
    mel = librosa.feature.melspectrogram(
        y=wav, sr=sample_rate, n_fft=window, hop_length=window // 4, win_length=window,
        window="hann", center=True, power=1.0, n_mels=n_mels, fmin=0.0, fmax=None)
    return 2.0 * np.log10(np.maximum(mel, MEL_FLOOR))  # DAC: log10(clamp(mel) ** 2)


def multiscale_mel_distance(ref, est, sample_rate: int) -> float:
    """Mean over `mel_scales(sample_rate)` of the L1 between log10 (squared magnitude) mel spectrograms.

    DAC's MelSpectrogramLoss (mag_weight 0, log_weight 1, pow 2, clamp 1e-5, fmin 0, fmax Nyquist).
    """
    ref, est = align(ref, est)
    if not _finite_or_warn(est, "mel distance"):
        return float("nan")
    sample_rate = int(sample_rate)
    dists = [np.mean(np.abs(_log_mel(ref, sample_rate, w, m) - _log_mel(est, sample_rate, w, m)))
             for w, m in mel_scales(sample_rate)]
    return float(np.mean(dists))


def multiresolution_stft_distance(ref, est, fft_sizes=(512, 1024, 2048)) -> float:
    """Mean over resolutions of spectral convergence + log-magnitude L1 (hann window n_fft, hop n_fft/4).

    Spectral convergence is ||S_ref - S_est||_F / ||S_ref||_F; the log term is mean |log S_ref - log S_est|
    with magnitudes floored at 1e-7 (Parallel WaveGAN's multi-resolution STFT loss).
    """
    ref, est = align(ref, est)
    if not _finite_or_warn(est, "STFT distance"):
        return float("nan")
    total = []
    for n_fft in fft_sizes:
        def mag(x):
            spec = librosa.stft(x, n_fft=n_fft, hop_length=n_fft // 4, win_length=n_fft,
                                window="hann", center=True)
            return np.maximum(np.abs(spec).astype(np.float64), STFT_FLOOR)
        s_ref, s_est = mag(ref), mag(est)
        sc = np.linalg.norm(s_ref - s_est) / np.linalg.norm(s_ref)
        log_l1 = np.mean(np.abs(np.log(s_ref) - np.log(s_est)))
        total.append(sc + log_l1)
    return float(np.mean(total))


def _pesq(ref, est, sample_rate: int, rate: int, mode: str) -> float:
    name = f"PESQ-{mode.upper()}"
    ref, est = align(ref, est)
    if not _finite_or_warn(est, name):
        return float("nan")
    if _silent(ref, name):
        return float("nan")
    ref, est = resample(ref, sample_rate, rate), resample(est, sample_rate, rate)
    try:
        return float(pesq_lib.pesq(rate, ref, est, mode))
    # PesqError: no utterance detected, buffer too short, ... ValueError: the C code meets a NaN,
    # as it does for a silent estimate.
    except (pesq_lib.PesqError, ValueError) as e:
        reason = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        log.warning("%s cannot score this pair (%s); returning NaN", name, reason)
        return float("nan")


def pesq_wb(ref, est, sample_rate: int) -> float:
    """Wide-band PESQ (P.862.2, MOS-LQO 1.04..4.64) at 16 kHz, resampling with soxr if needed."""
    return _pesq(ref, est, sample_rate, 16000, "wb")


def pesq_nb(ref, est, sample_rate: int) -> float:
    """Narrow-band PESQ (P.862, MOS-LQO up to about 4.55) at 8 kHz, resampling with soxr."""
    return _pesq(ref, est, sample_rate, 8000, "nb")


def stoi(ref, est, sample_rate: int) -> float:
    """STOI in [0, 1] via pystoi (which resamples to 10 kHz and drops silent frames).

    NaN with a warning where pystoi cannot score: a silent reference (peak < 1e-4), or fewer than 30 frames of
    speech (pystoi would return 1e-5, which would drag an average down).
    """
    ref, est = align(ref, est)
    if not _finite_or_warn(est, "STOI"):
        return float("nan")
    if _silent(ref, "STOI"):
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = pystoi.stoi(ref.astype(np.float64), est.astype(np.float64), int(sample_rate))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        log.warning("STOI: too little speech to score; returning NaN")
        return float("nan")
    return float(score)


def latent_stats(mean, mask=None) -> dict:
    """Per-channel mean and std of latent means `[N, F, D]` over valid frames (`mask [N, F]`, all if None).

    Shows whether a VAE's latent is centred and how evenly its channels are used (a collapsed channel has
    std near 0). Returns `channel_mean` and `channel_std` ([D] float64), `mean_abs_mean` (mean of
    |channel means|), `mean_std`, `min_std`, `max_std` and `frames` (number of valid frames).
    """
    mean = np.asarray(mean, dtype=np.float64)
    if mean.ndim != 3:
        raise ValueError(f"latent means must be [N, F, D], got shape {mean.shape}")
    mask = np.ones(mean.shape[:2], bool) if mask is None else np.asarray(mask).astype(bool)
    if mask.shape != mean.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match latents {mean.shape[:2]}")
    frames = mean[mask]  # [valid, D]
    if frames.shape[0] == 0:
        raise ValueError("mask selects no frames")
    channel_mean = frames.mean(axis=0)
    channel_std = frames.std(axis=0)
    return {
        "channel_mean": channel_mean,
        "channel_std": channel_std,
        "mean_abs_mean": float(np.mean(np.abs(channel_mean))),
        "mean_std": float(np.mean(channel_std)),
        "min_std": float(np.min(channel_std)),
        "max_std": float(np.max(channel_std)),
        "frames": int(frames.shape[0]),
    }


METRICS = {
    "mel_distance": multiscale_mel_distance,
    "stft_distance": lambda ref, est, sr: multiresolution_stft_distance(ref, est),
    "pesq_wb": pesq_wb,
    "pesq_nb": pesq_nb,
    "stoi": stoi,
    # pYIN voicing of the resynthesis against its input, frame by frame: 1 for speech with its pitch
    # where the input has one, ~the unvoiced share for noise.
    "voicing_agreement": lambda ref, est, sr: _voicing(ref, est, sr)["voicing_agreement"],
    # ... and at the input's pitch (a frame-rate buzz is voiced but not at the speaker's F0).
    "pitch_recall": lambda ref, est, sr: _voicing(ref, est, sr)["pitch_recall"],
    "pitch_correlation": lambda ref, est, sr: _voicing(ref, est, sr)["pitch_correlation"],
}


@functools.lru_cache(maxsize=4)
def _voicing_cached(ref: bytes, est: bytes, sample_rate: int) -> dict:
    return voicing.voicing_agreement(np.frombuffer(ref, np.float32), np.frombuffer(est, np.float32), sample_rate)


def _voicing(ref, est, sample_rate: int) -> dict:
    """voicing.voicing_agreement, computed once per (ref, est) for both metrics that read it."""
    if not np.all(np.isfinite(est)):
        return dict(voicing_agreement=float("nan"), pitch_recall=float("nan"), pitch_correlation=float("nan"))
    ref, est = (np.ascontiguousarray(x, np.float32) for x in (ref, est))
    return _voicing_cached(ref.tobytes(), est.tobytes(), sample_rate)


def _utterances(wavs, lengths, what):
    if isinstance(wavs, np.ndarray) and wavs.ndim == 2:
        rows = list(wavs)
        if lengths is not None:
            rows = [row[:int(n)] for row, n in zip(rows, lengths)]
        return rows
    if lengths is not None:
        raise ValueError(f"lengths apply to a padded [B, T] batch, but {what} is a list")
    return [np.asarray(w) for w in wavs]


def resynthesis_metrics(refs, ests, sample_rate: int, lengths=None) -> dict:
    """Every metric in `METRICS`, averaged over utterances (NaNs skipped), plus counts.

    `refs` and `ests` are lists of 1-D waveforms, or padded `[B, T]` arrays with `lengths [B]` giving each
    utterance's valid samples (applied to both). Each estimate is compared over its reference's length.
    Returns `{metric: mean}` with `num_utterances` and `unscored` (metric values that came out NaN).
    """
    refs = _utterances(refs, lengths, "refs")
    ests = _utterances(ests, lengths, "ests")
    if len(refs) != len(ests):
        raise ValueError(f"{len(refs)} references but {len(ests)} estimates")
    if not refs:
        raise ValueError("no utterances to score")
    scores = np.array([[fn(ref, est, sample_rate) for fn in METRICS.values()]
                       for ref, est in zip(refs, ests)], dtype=np.float64)  # [N, metrics]
    out = {}
    for name, column in zip(METRICS, scores.T):
        finite = column[np.isfinite(column)]
        out[name] = float(finite.mean()) if finite.size else float("nan")
    out["num_utterances"] = len(refs)
    out["unscored"] = int(np.sum(~np.isfinite(scores)))
    return out
