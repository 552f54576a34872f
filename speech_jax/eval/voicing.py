"""Voicing: is the output speech with a pitch, or noise? librosa's pYIN decides per frame.

Unvoiced bursts have a plausible spectral envelope and a low mel distance yet no pitch; these numbers
tell them apart from speech: the voiced-frame fraction of one signal, and the frame-wise agreement of
two time-aligned signals (a resynthesis and its input).
"""
from __future__ import annotations

import librosa
import numpy as np

# Speech F0 range (Hz) searched by pYIN; 20 ms hops.
FMIN, FMAX = 60.0, 500.0


def voiced_flags(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """[frames] bool: pYIN's voicing decision every 20 ms."""
    wav = np.asarray(wav, np.float32)
    hop = sample_rate // 50
    frame = 4 * hop  # 80 ms: two periods of 25 Hz below FMIN, as pYIN needs
    if wav.size < frame:
        return np.zeros(0, bool)
    _, voiced, _ = librosa.pyin(wav, fmin=FMIN, fmax=FMAX, sr=sample_rate, frame_length=frame,
                                hop_length=hop, center=True)
    return np.asarray(voiced, bool)


def voiced_fraction(wav: np.ndarray, sample_rate: int) -> float:
    flags = voiced_flags(wav, sample_rate)
    return float(flags.mean()) if flags.size else 0.0


def voicing_agreement(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict:
    """Frame-wise pYIN voicing of a time-aligned estimate against its reference: the share of frames
    that agree, and the recall/precision of the reference's voiced frames."""
    ref, est = voiced_flags(reference, sample_rate), voiced_flags(estimate, sample_rate)
    n = min(ref.size, est.size)
    ref, est = ref[:n], est[:n]
    both = float(np.sum(ref & est))
    return dict(voicing_agreement=float(np.mean(ref == est)) if n else 0.0,
                voiced_recall=both / max(float(ref.sum()), 1.0),
                voiced_precision=both / max(float(est.sum()), 1.0),
                voiced_fraction_reference=float(ref.mean()) if n else 0.0,
                voiced_fraction_estimate=float(est.mean()) if n else 0.0)
