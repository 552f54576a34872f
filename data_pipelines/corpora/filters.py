"""Preparation-time filters: each check either passes or raises Rejected naming its filter, so the
builder can count and report every file it leaves out (DESIGN.md: bad input loses nothing silently)."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from speech_jax.text.normalize import TextError, normalize_text

FILTERS = ("unreadable", "silence", "clipping", "duration", "text", "quality", "duplicate")

# int16 full scale: a sample this loud was clipped by the recorder or by a gain stage.
_FULL_SCALE = 32766 / 32768
# Scripts written without spaces between words: spaces between two of their characters are artefacts
# of tokenised transcripts (Emilia's zh / ja, Kaldi's AISHELL-style word-segmented text).
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_SPACE = re.compile(f"(?<=[{_CJK}]) +(?=[{_CJK}])")
_NO_SPACE_LANGUAGES = {"zh", "cmn", "yue", "ja", "wuu"}


class Rejected(ValueError):
    """An utterance left out; `filter` is one of FILTERS, `reason` says why in words."""

    def __init__(self, filter_name: str, reason: str):
        assert filter_name in FILTERS, filter_name
        self.filter, self.reason = filter_name, reason
        super().__init__(f"{filter_name}: {reason}")


def normalise_text(text: str | None, language: str) -> str:
    """The stored transcript: `normalize_text` (Unicode form, quotes, dashes, spaces), then per-language
    rules; raises Rejected('text') when there is none."""
    if text is None:
        raise Rejected("text", "no transcript")
    try:
        out = normalize_text(text)
    except TextError as e:
        raise Rejected("text", str(e)) from None
    if language.split("-")[0].lower() in _NO_SPACE_LANGUAGES:
        out = _CJK_SPACE.sub("", out)
    return out


def check_duration(seconds: float, min_seconds: float, max_seconds: float) -> None:
    if seconds < min_seconds:
        raise Rejected("duration", f"too short: {seconds:.3f} s < {min_seconds} s")
    if seconds > max_seconds:
        raise Rejected("duration", f"too long: {seconds:.3f} s > {max_seconds} s")


def check_quality(score: float | None, min_quality: float | None) -> None:
    if min_quality is not None and score is not None and score < min_quality:
        raise Rejected("quality", f"quality score {score:.3f} < {min_quality}")


def check_clipping(audio: np.ndarray, max_clipped: float) -> None:
    """`audio` float in [-1, 1], any shape: at most a `max_clipped` fraction of samples at full scale."""
    clipped = float(np.mean(np.abs(audio) >= _FULL_SCALE)) if audio.size else 0.0
    if clipped > max_clipped:
        raise Rejected("clipping", f"{100 * clipped:.2f} % of samples at full scale > {100 * max_clipped:.2f} %")


def audio_digest(audio: np.ndarray) -> str:
    """Identity of the stored samples: equal for the same recording in another file or container."""
    return hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest()
