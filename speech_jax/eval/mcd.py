"""Mel-cepstral distortion after DTW, and the ratio of spoken durations, against a ground truth.

MCD is conventionally computed on mel-cepstra from SPTK (`mcep`, all-pass frequency warping of
a WORLD or STFT envelope). Here, as a common approximation that needs only librosa, the cepstra
are MFCCs: the DCT-II (orthonormal) of the natural-log mel *amplitude* spectrum, divided by
sqrt(2·n_mels) so that they follow the cepstral convention ln|X(ω)| = c0 + 2·Σ c_k cos(kω) of
SPTK's mcep. With natural logs of amplitudes the usual constant 10/ln10 then turns distances into
dB as it does for mcep, and values land in the same range (a few dB), but they are not
interchangeable with SPTK-based MCDs (a triangular filterbank instead of all-pass warping):
compare them with each other. Settings: 25 ms Hann window (FFT of the next power of two), 5 ms
hop, 80 mel bands from 0 Hz to Nyquist, 13 coefficients c1..c13; c0 (frame energy) is excluded.

Leading and trailing silence is trimmed first (as for the durations), so the result does not
depend on how much padding a system leaves around the speech. Frames are then aligned by dynamic
time warping (`librosa.sequence.dtw`, Euclidean cost, which is the per-frame MCD up to a
constant), and the MCD is the mean over the warping path.
"""

from __future__ import annotations

import math

import librosa
import numpy as np

MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)  # dB per unit Euclidean cepstral distance
WINDOW_MS = 25.0
HOP_MS = 5.0
N_MELS = 80
N_MFCC = 13
LOG_FLOOR = 1e-5  # mel amplitude floor, about -100 dBFS; espeak's pauses are digital zeros
TOP_DB = 40.0  # edge-silence trimming: this far below the loudest frame counts as silence


def _mono(wav) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
        raise ValueError(f"expected non-empty mono audio [T], got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise ValueError("audio has non-finite samples")
    return wav


def mel_cepstrum(wav, sr: int, n_mfcc: int = N_MFCC, *, window_ms: float = WINDOW_MS,
                 hop_ms: float = HOP_MS, n_mels: int = N_MELS, fmin: float = 0.0,
                 fmax: float | None = None) -> np.ndarray:
    """Cepstra c1..c_{n_mfcc} of each frame, `[frames, n_mfcc]` (c0 excluded), float64.

    DCT-II (ortho) of ln(mel amplitude) via `librosa.feature.mfcc`, over sqrt(2·n_mels); see the
    module docstring.
    """
    wav = _mono(wav)
    win = max(1, int(round(window_ms * sr / 1000)))
    hop = max(1, int(round(hop_ms * sr / 1000)))
    n_fft = 1 << (win - 1).bit_length()
    mel = librosa.feature.melspectrogram(
        y=wav, sr=sr, n_fft=n_fft, hop_length=hop, win_length=win, window="hann", center=True,
        power=1.0, n_mels=n_mels, fmin=fmin, fmax=fmax)
    log_mel = np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float64)
    cep = librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc + 1, dct_type=2, norm="ortho")
    return cep[1:].T / math.sqrt(2.0 * n_mels)


def frame_mcd(ref_cep, est_cep) -> np.ndarray:
    """Per-frame MCD in dB between paired cepstral frames `[N, D]`."""
    diff = np.asarray(ref_cep, np.float64) - np.asarray(est_cep, np.float64)
    return MCD_CONSTANT * np.sqrt(np.sum(diff * diff, axis=-1))


def _cepstra(ref, est, sr, trim, cepstrum_kwargs):
    if trim:
        ref, est = trim_silence(ref, sr), trim_silence(est, sr)
    return mel_cepstrum(ref, sr, **cepstrum_kwargs), mel_cepstrum(est, sr, **cepstrum_kwargs)


def mcd_dtw(ref, est, sr: int, *, trim: bool = True, **cepstrum_kwargs) -> float:
    """Mean MCD (dB) of `est` against `ref` (both mono at `sr`) over the DTW path of their cepstra.

    (10/ln10)·sqrt(2·Σ_d (c_d − ĉ_d)²) per aligned frame pair, c0 excluded, averaged over the
    path; edge silence trimmed first when `trim`. 0 for identical signals; insensitive to tempo,
    sensitive to the spectral envelope.
    """
    a, b = _cepstra(ref, est, sr, trim, cepstrum_kwargs)
    _, path = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean", backtrack=True)
    return float(np.mean(frame_mcd(a[path[:, 0]], b[path[:, 1]])))


def mcd_unaligned(ref, est, sr: int, *, trim: bool = True, **cepstrum_kwargs) -> float:
    """Mean MCD (dB) over frames paired by index, the longer signal cut: what DTW corrects for."""
    a, b = _cepstra(ref, est, sr, trim, cepstrum_kwargs)
    n = min(len(a), len(b))
    return float(np.mean(frame_mcd(a[:n], b[:n])))


def trim_silence(wav, sr: int, top_db: float = TOP_DB) -> np.ndarray:
    """`wav` without its leading and trailing silence (`librosa.effects.trim`: frames more than
    `top_db` below the loudest one, 25 ms frames every 5 ms). All-zero audio is returned as is."""
    wav = _mono(wav)
    if not np.any(wav):
        return wav
    hop = max(1, int(round(HOP_MS * sr / 1000)))
    frame = 1 << (max(1, int(round(WINDOW_MS * sr / 1000))) - 1).bit_length()
    trimmed, _ = librosa.effects.trim(wav, top_db=top_db, frame_length=frame, hop_length=hop)
    return trimmed


def speech_seconds(wav, sr: int, top_db: float = TOP_DB) -> float:
    """Duration after trimming leading and trailing silence; 0 for all-zero audio."""
    wav = _mono(wav)
    return 0.0 if not np.any(wav) else trim_silence(wav, sr, top_db).size / sr


def duration_ratio(ref, est, sr: int, top_db: float = TOP_DB) -> float:
    """Spoken duration of `est` over that of `ref` (silence trimmed at both ends); 1 = same tempo,
    above 1 = slower than the ground truth."""
    ref_s = speech_seconds(ref, sr, top_db)
    if ref_s <= 0:
        raise ValueError("the reference is silent: no duration to compare with")
    return speech_seconds(est, sr, top_db) / ref_s
