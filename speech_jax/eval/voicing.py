"""Voicing: is the output speech with a pitch, and the right pitch, or noise? librosa's pYIN decides
per frame.

Unvoiced bursts have a plausible spectral envelope and a low mel distance yet no pitch; these numbers
tell them apart from speech: the voiced-frame fraction of one signal, and the frame-wise agreement of
two time-aligned signals (a resynthesis and its input). Voicing alone is fooled by a buzz: a frame-rate
decoder whose phase is not learned rings at its frame rate's harmonics (100 Hz at 50 Hz frames) whatever
the speaker's pitch, and pYIN calls that voiced. Two numbers close that gap: `pitch_recall`, the share of
the reference's voiced frames where the estimate is voiced within a semitone of the reference's F0 (the
usual 20 % gross-pitch-error bound would credit a 100 Hz buzz on every voice between 83 and 120 Hz), and
`pitch_correlation`, how the log-F0 contours of the two move together (a constant buzz: about 0).
"""
from __future__ import annotations

import librosa
import numpy as np

# Speech F0 range (Hz) searched by pYIN; 20 ms hops.
FMIN, FMAX = 60.0, 500.0
PITCH_TOLERANCE = 1.0  # semitones between the estimate's and the reference's F0 beyond which a frame is wrong


def pitch(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """pYIN every 20 ms: (F0 in Hz [frames], nan where unvoiced; voiced [frames] bool)."""
    wav = np.asarray(wav, np.float32)
    hop = sample_rate // 50
    frame = 4 * hop  # 80 ms: two periods of 25 Hz below FMIN, as pYIN needs
    if wav.size < frame:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    f0, voiced, _ = librosa.pyin(wav, fmin=FMIN, fmax=FMAX, sr=sample_rate, frame_length=frame,
                                 hop_length=hop, center=True)
    voiced = np.asarray(voiced, bool) & np.isfinite(f0)
    return np.where(voiced, f0, np.nan), voiced


def voiced_flags(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """[frames] bool: pYIN's voicing decision every 20 ms."""
    return pitch(wav, sample_rate)[1]


def voicing_summary(wav: np.ndarray, sample_rate: int, min_voiced: int = 20) -> tuple[float, float | None]:
    """(voiced-frame fraction, median F0 in Hz over the voiced frames); the F0 is None with fewer than
    `min_voiced` voiced frames (0.4 s): a few stray frames of mostly unvoiced output are no pitch to read."""
    f0, voiced = pitch(wav, sample_rate)
    fraction = float(voiced.mean()) if voiced.size else 0.0
    return fraction, (float(np.median(f0[voiced])) if voiced.sum() >= min_voiced else None)


def median_f0(wav: np.ndarray, sample_rate: int) -> float | None:
    return voicing_summary(wav, sample_rate)[1]


def semitones_apart(a_hz: float | None, b_hz: float | None) -> float | None:
    """|12·log2(a / b)|: how far apart two pitches are; None when either is unknown."""
    return None if a_hz is None or b_hz is None else float(abs(12.0 * np.log2(a_hz / b_hz)))


def voiced_fraction(wav: np.ndarray, sample_rate: int) -> float:
    flags = voiced_flags(wav, sample_rate)
    return float(flags.mean()) if flags.size else 0.0


def voicing_agreement(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict:
    """Frame-wise pYIN voicing of a time-aligned estimate against its reference: the share of frames
    that agree, the recall/precision of the reference's voiced frames, `pitch_recall` (of the reference's
    voiced frames, the share voiced in the estimate within PITCH_TOLERANCE of its F0; NaN when the
    reference has no voiced frame) and `pitch_correlation` (Pearson's r of log F0 over the frames voiced in
    both; NaN under 10 such frames)."""
    (ref_f0, ref), (est_f0, est) = pitch(reference, sample_rate), pitch(estimate, sample_rate)
    n = min(ref.size, est.size)
    ref, est, ref_f0, est_f0 = ref[:n], est[:n], ref_f0[:n], est_f0[:n]
    both = ref & est
    with np.errstate(invalid="ignore", divide="ignore"):
        right = both & (np.abs(12.0 * np.log2(est_f0 / ref_f0)) <= PITCH_TOLERANCE)
    correlation = float("nan")
    if both.sum() >= 10 and np.ptp(ref_f0[both]) > 0 and np.ptp(est_f0[both]) > 0:
        correlation = float(np.corrcoef(np.log(ref_f0[both]), np.log(est_f0[both]))[0, 1])
    return dict(voicing_agreement=float(np.mean(ref == est)) if n else 0.0,
                voiced_recall=float(both.sum()) / max(float(ref.sum()), 1.0),
                voiced_precision=float(both.sum()) / max(float(est.sum()), 1.0),
                pitch_recall=float(right.sum() / ref.sum()) if ref.any() else float("nan"),
                pitch_correlation=correlation,
                voiced_fraction_reference=float(ref.mean()) if n else 0.0,
                voiced_fraction_estimate=float(est.mean()) if n else 0.0)
