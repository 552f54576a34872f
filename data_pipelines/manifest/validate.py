"""Checking and loading one manifest row; every failure names the file and the reason."""

from __future__ import annotations

import numpy as np

from data_pipelines.espeak_tts import schema
from data_pipelines.manifest.rows import Row
from speech_jax.audio import io as audio_io


class BadFileError(ValueError):
    """One manifest row cannot be used. `.path` and `.reason` say which and why."""

    def __init__(self, row: Row, reason: str):
        self.row, self.path, self.reason = row, row.wav_path, reason
        super().__init__(f"{row.wav_path} (manifest line {row.line}): {reason}")


def load_row(row: Row, sample_rate: int, max_channels: int, min_peak: float,
             min_seconds: float = 0.0) -> np.ndarray:
    """int16 audio of `row` at `sample_rate`; raises BadFileError."""
    if not row.text.strip():
        raise BadFileError(row, "empty text")
    if not row.speaker:
        raise BadFileError(row, "empty speaker")
    try:
        audio, _ = audio_io.load_audio(row.wav_path, target_sr=sample_rate,
                                       max_channels=max_channels, min_peak=min_peak,
                                       min_seconds=min_seconds)
    except audio_io.AudioError as e:
        raise BadFileError(row, e.reason) from None
    return schema.to_int16(audio)
