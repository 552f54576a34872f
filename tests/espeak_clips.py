"""A few espeak utterances, rendered in-process: the fixed set the learnability proofs overfit. Real
speech (voiced, with words), seconds to render, no corpus needed. Two sentences in two voices (a low male,
a high female), so a model that ignores the speaker cannot reproduce all four."""
from __future__ import annotations

import numpy as np

from data_pipelines.espeak_tts.render import Utterance, render
from data_pipelines.espeak_tts.voices import Voice

SR = 16000
TEXTS = ("The cat sat on the warm mat.", "Seven green boats left early.")
VOICES = (Voice("en", "m3", 40, 165), Voice("en", "f2", 70, 165))
UTTERANCES = tuple((text, voice) for voice in VOICES for text in TEXTS)


def clips(utterances=UTTERANCES) -> list[np.ndarray]:
    """float32 waveforms in [-1, 1] at SR of (text, voice) pairs, silence trimmed to 0.1 s each side."""
    return [render(Utterance(f"u{i}", "train", voice, text), SR).astype(np.float32) / 32768
            for i, (text, voice) in enumerate(utterances)]


def padded(wavs: list[np.ndarray], multiple: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """([rows, longest rounded up to `multiple`] zero-padded audio, [rows] lengths); the default is one
    25 Hz token at 16 kHz, as the pipeline's buckets are."""
    longest = max(w.size for w in wavs)
    audio = np.zeros((len(wavs), -(-longest // multiple) * multiple), np.float32)
    for i, w in enumerate(wavs):
        audio[i, :w.size] = w
    return audio, np.asarray([w.size for w in wavs], np.int32)
