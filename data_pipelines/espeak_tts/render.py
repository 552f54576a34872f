"""Turn one planned utterance into stored audio: synthesise, resample, trim silence.

Runs in worker processes, so it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Iterator

import numpy as np
import soxr

from data_pipelines.espeak_tts import schema, synth
from data_pipelines.espeak_tts.voices import Voice

_MIN_PARALLEL = 300  # below this, starting worker processes costs more than it saves
_SILENCE_DB = -40.0  # relative to the utterance peak; espeak's pauses are digital zeros anyway


@dataclasses.dataclass(frozen=True)
class Utterance:
    utt_id: str
    split: str
    voice: Voice
    text: str


def trim_silence(audio: np.ndarray, sample_rate: int, margin_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing silence and pad back exactly `margin_s` of zeros on each side."""
    magnitude = np.abs(audio.astype(np.float32))
    peak = float(magnitude.max()) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.nonzero(magnitude > peak * 10 ** (_SILENCE_DB / 20))[0]
    pad = np.zeros(int(round(margin_s * sample_rate)), audio.dtype)
    return np.concatenate([pad, audio[loud[0]:loud[-1] + 1], pad])


def render(utt: Utterance, sample_rate: int) -> np.ndarray:
    """int16 audio of `utt` at `sample_rate`, silence-trimmed; identical on every call."""
    native = synth.synthesize(utt.text, utt.voice)
    if native.size == 0 or not np.any(native):
        raise synth.EspeakError(f"espeak produced no audio for {utt.utt_id}: {utt.text!r}")
    audio = native.astype(np.float32) / 32768.0
    rate = synth.native_sample_rate()
    if sample_rate != rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return trim_silence(schema.to_int16(audio), sample_rate)


def _render_job(job: tuple[Utterance, int]) -> np.ndarray:
    return render(*job)


def render_many(utts: list[Utterance], sample_rate: int,
                processes: int | None = None) -> Iterator[np.ndarray]:
    """Audio of `utts`, in order. Output does not depend on `processes` (see synth.py).

    Workers are spawned, not forked, because the building process may hold TensorFlow threads.
    """
    if processes is None:
        processes = min(os.cpu_count() or 1, 8) if len(utts) >= _MIN_PARALLEL else 1
    jobs = [(u, sample_rate) for u in utts]
    if processes <= 1:
        yield from map(_render_job, jobs)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=16)
