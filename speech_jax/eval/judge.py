"""A trained judge stage (`speech_jax.train.tasks.judge`) as a `Transcriber`, and its CER.

The judge hears espeak phonemes, so its transcript is an IPA string and its reference is espeak's
reading of the target text (`reference`); `cer` compares the two. It was trained on espeak_tts only:
its CER is an in-domain proxy for intelligibility, comparable with itself (ground truth vs synthesis),
not with Whisper's WER.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from speech_jax.audio.io import check_audio, resample
from speech_jax.eval.cer import ctc_collapse, error_rate
from speech_jax.text.phonemes import PhonemeVocab, phonemize

LABEL = "judge CER (in-domain proxy, CTC recognizer trained on espeak_tts)"


class JudgeTranscriber:
    """Greedy CTC transcription, one utterance at a time, padded to a multiple of `bucket_seconds` so that
    one compiled program serves every utterance of a length bucket."""

    def __init__(self, workdir: str, bucket_seconds: float = 1.0):
        from speech_jax.train.restore import load_stage, read_config
        if bucket_seconds <= 0:
            raise ValueError(f"bucket_seconds must be > 0, got {bucket_seconds}")
        stage = read_config(workdir).stage
        if stage != "judge":
            raise ValueError(f"{workdir!r} holds a {stage!r} stage, not a judge: train one with "
                             f"`speech-jax train --config experiments/judge/small.py --workdir W`")
        config, graphdef, params, rest = load_stage(workdir, "judge")
        self.vocab = PhonemeVocab(config.data.phonemes)
        self.sample_rate = int(config.data.sample_rate)
        self.workdir = workdir
        # Whole hops, so padding never changes the frames of the utterance itself.
        multiple = 2 * int(config.mel.hop_length)
        self._bucket = max(multiple, int(math.ceil(bucket_seconds * self.sample_rate / multiple)) * multiple)
        self._state = (params, rest)

        def greedy(state, audio, audio_len):
            model = nnx.merge(graphdef, *state)
            mel, frame_mask = model.features(audio, audio_len)
            logits, mask = model(mel, frame_mask)
            return jnp.argmax(logits, -1).astype(jnp.int32), mask.sum(1)

        self._greedy = jax.jit(greedy)

    def transcribe(self, wav: np.ndarray, sample_rate: int, language: str | None = None) -> str:
        """The phonemes the judge hears in mono `wav` (any rate); `language` is not needed to listen."""
        del language
        audio = resample(check_audio(wav, sample_rate, min_peak=0.0), sample_rate, self.sample_rate)
        padded = np.zeros((1, -(-audio.size // self._bucket) * self._bucket), np.float32)
        padded[0, :audio.size] = audio
        ids, length = jax.device_get(self._greedy(self._state, padded, np.asarray([audio.size], np.int32)))
        return self.vocab.decode(ctc_collapse(ids[0, :int(length[0])]))

    def reference(self, text: str, language: str) -> str:
        """What the judge should hear for `text`: espeak's phonemes of it in `language`."""
        return phonemize(text, language)

    def cer(self, hypothesis: str, text: str, language: str | None) -> float:
        """Phoneme-string CER of a `transcribe` output against `text`; needs the language to read the text."""
        if not language:
            raise ValueError("the judge's CER needs the utterance's language (to phonemize the target text)")
        return error_rate(hypothesis, self.reference(text, language))

    def __repr__(self) -> str:
        return f"JudgeTranscriber({self.workdir!r})"
