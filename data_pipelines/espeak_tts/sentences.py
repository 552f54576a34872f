"""The sentence lists shipped in `sentences/<lang>.txt` and their train / held-out split."""

from __future__ import annotations

import functools
import hashlib
import pathlib
import random

_DIR = pathlib.Path(__file__).parent / "sentences"


@functools.cache
def load_sentences(language: str) -> tuple[str, ...]:
    """Sentences of `language`, in file order; '#' lines are comments (licence notes)."""
    path = _DIR / f"{language}.txt"
    if not path.exists():
        raise ValueError(f"no sentence list for language {language!r} (looked for {path})")
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def heldout_indices(language: str, seed: int, fraction: float, minimum: int = 2) -> frozenset[int]:
    """Indices of the sentences held out for validation / zero-shot test.

    Ranked by a seeded hash of the sentence text, so the choice is deterministic and does
    not move when other sentences are added to the file.
    """
    sentences = load_sentences(language)
    count = min(len(sentences) - 1, max(minimum, round(fraction * len(sentences))))

    def rank(i: int) -> bytes:
        return hashlib.sha256(f"{seed}/{language}/{sentences[i]}".encode()).digest()

    return frozenset(sorted(range(len(sentences)), key=rank)[:count])


def _words(language: str, sentence: str) -> list[str]:
    """Units a sentence is re-mixed from: space-separated words, or characters for Chinese (no spaces)."""
    text = sentence.rstrip("。.!?！？")
    if language in ("cmn", "yue"):
        return [c for c in text if c not in "，,、；：　 "]
    return [w.strip(",;:") for w in text.split() if w.strip(",;:")]


def mixed_sentence(language: str, pool: list[int], rng: random.Random) -> str:
    """A new word sequence drawn from the words of the `pool` sentences, as long as one of them.

    A few hundred sentences teach a model those sentences: over 9 epochs the demo's AR memorised its
    training sentences (teacher-forced loss 3.1 on them, 3.5 on held-out ones read by the same voices).
    Re-mixed words give every utterance a new phoneme sequence, with only words of the training
    sentences, so held-out sentences keep their unseen words."""
    sentences = load_sentences(language)
    vocabulary = sorted({w for i in pool for w in _words(language, sentences[i])})
    length = len(_words(language, sentences[rng.choice(pool)]))
    words = [rng.choice(vocabulary) for _ in range(max(length, 2))]
    joiner = "" if language in ("cmn", "yue") else " "
    end = "。" if language in ("cmn", "yue", "ja") else "."
    return joiner.join(words) + end
