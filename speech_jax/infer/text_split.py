"""Splits long text into pieces the AR model can take: sentences, each within a BPE-id budget.

Sentences end at . (before a space) and at ! ? and CJK 。！？ (no space needed after them). A sentence
over the budget is cut at clause punctuation (, ; : and CJK ，、；：), then at spaces, then (text
without spaces, e.g. CJK) between characters, packing as many parts per piece as fit. Pieces with no
letter or digit (stray punctuation) are dropped.
"""
from __future__ import annotations

import re
from typing import Callable

from speech_jax.text import TextError, normalize_text

# "." ends a sentence only before a space ("3.5", "e.g."); ! ? and 。 also before more text (NFKC makes
# the full-width ！？ ASCII), unless more end marks or closing quotes / brackets follow.
_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|(?<=[!?。])(?![.!?。\s\"'」』）)\]])")
# Each level splits *after* its separator, so the separator stays with the text before it.
_LEVELS = (re.compile(r"(?<=[,;:，、；：])"), re.compile(r"(?<=\s)"), re.compile(r"(?<=.)", re.S))


def _speakable(piece: str) -> bool:
    return any(ch.isalnum() for ch in piece)


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _fit(piece: str, count: Callable[[str], int], max_len: int, level: int = 0) -> list[str]:
    if count(piece) <= max_len:
        return [piece]
    if level == len(_LEVELS):
        raise TextError(f"cannot fit {piece!r} into {max_len} text ids")
    parts = [p for p in _LEVELS[level].split(piece) if p]
    chunks, current = [], ""
    for part in parts:
        candidate = current + part
        if current and count(candidate.strip()) > max_len:
            chunks.append(current.strip())
            current = part
        else:
            current = candidate
    chunks.append(current.strip())
    if len(chunks) == 1:  # nothing to cut at this level
        return _fit(piece, count, max_len, level + 1)
    return [p for chunk in chunks if chunk for p in _fit(chunk, count, max_len, level + 1)]


def split_text(text: str, count: Callable[[str], int], max_len: int) -> list[str]:
    """Normalised `text` -> pieces with count(piece) <= max_len ids, in reading order.

    count: the number of text ids of a string (e.g. `len(bpe.encode(s))`). Raises TextError on
    text with nothing to say."""
    pieces = [p for s in split_sentences(normalize_text(text)) for p in _fit(s, count, max_len)]
    pieces = [p for p in pieces if _speakable(p)]
    if not pieces:
        raise TextError(f"no speakable text (letters or digits) in {text[:40]!r}")
    return pieces
