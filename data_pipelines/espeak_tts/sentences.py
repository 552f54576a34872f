"""The sentence lists shipped in `sentences/<lang>.txt` and their train / held-out split."""

from __future__ import annotations

import functools
import hashlib
import pathlib

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
