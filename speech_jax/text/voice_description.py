"""Voice descriptions for text-to-voice (T2V): a corpus speaker's attributes in words, and words as ids.

MiniMax-Speech's T2V generates a timbre from an open description plus structured tags. The embedded corpus
knows each speaker exactly (espeak language, voice variant, pitch and rate are in the speaker id, e.g.
`en-f3-p40-r180`), so training descriptions are drawn from those attributes in varied wording and with some
attributes left out (a description may say only "a fast female voice"). The vocabulary is closed: the
words the phrasings below can produce; `encode` reports any other word so that a user sees what was not
understood instead of a silent guess.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from data_pipelines.espeak_tts.voices import PITCHES, RATES

LANGUAGE_NAMES = {"en": "english", "cmn": "mandarin", "yue": "cantonese", "ja": "japanese", "ko": "korean",
                  "de": "german", "fr": "french", "es": "spanish"}
# espeak-ng-data/voices/!v: the variants whose files declare a female voice; every other variant (and the
# language's default voice) is male or inherits espeak's male default.
FEMALE_VARIANTS = frozenset({"f1", "f2", "f3", "f4", "f5", "Annie", "anika", "belinda", "linda", "steph"})
TIMBRES = {"whisper": "whispering", "croak": "hoarse"}  # variants with a timbre words can name
LEVELS = ("very low", "low", "medium", "high", "very high")           # PITCHES in order
PACES = ("very slow", "slow", "moderate", "fast", "very fast")       # RATES in order
GENDER_WORDS = {"male": ("male", "man", "masculine"), "female": ("female", "woman", "feminine")}
PITCH_BEFORE = ("{} pitched", "{}-pitched", "{} voiced")   # before the noun: "a low pitched voice"
PITCH_AFTER = ("with a {} pitch", "{} pitched", "{} pitch")  # after it: "a voice with a low pitch"
PACE_FORMS = ("{}", "speaking {}", "{} pace", "at a {} pace", "{} speech")
LANGUAGE_FORMS = ("speaking {}", "in {}", "{}", "a {} speaker")
OPENINGS = ("a", "the voice of a", "", "i want a", "please use a")
NOUNS = ("voice", "speaker", "narrator")
JOINERS = (", ", " and ", " ")

_WORD = re.compile(r"[a-z]+")
_SPEAKER_ID = re.compile(r"^(?P<language>[a-z]+)-(?P<variant>[A-Za-z0-9]+)-p(?P<pitch>\d+)-r(?P<rate>\d+)$")


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What a description can say about a voice; None: not said."""
    language: str | None = None   # LANGUAGE_NAMES value
    gender: str | None = None     # "male" | "female"
    pitch: str | None = None      # a LEVELS entry
    pace: str | None = None       # a PACES entry
    timbre: str | None = None     # a TIMBRES value


def _nearest(value: int, grid: tuple[int, ...], words: tuple[str, ...]) -> str:
    return words[int(np.argmin([abs(value - g) for g in grid]))]


def speaker_attributes(speaker_id: str) -> Attributes:
    """The attributes of an embedded-corpus speaker from its id (`speech_jax` espeak ids only)."""
    m = _SPEAKER_ID.match(speaker_id)
    if m is None or m["language"] not in LANGUAGE_NAMES:
        raise ValueError(f"speaker {speaker_id!r} carries no attributes a description can be made from: T2V "
                         f"trains on espeak_tts corpora, whose ids read language-variant-pPITCH-rRATE")
    variant = m["variant"]
    return Attributes(language=LANGUAGE_NAMES[m["language"]],
                      gender="female" if variant in FEMALE_VARIANTS else "male",
                      pitch=_nearest(int(m["pitch"]), PITCHES, LEVELS),
                      pace=_nearest(int(m["rate"]), RATES, PACES),
                      timbre=TIMBRES.get(variant))


def describe(attrs: Attributes, rng: np.random.Generator, keep: float = 0.8) -> str:
    """One wording of `attrs`, each attribute kept with probability `keep` (at least one kept)."""
    said = {k: v for k, v in dataclasses.asdict(attrs).items() if v is not None}
    kept = {k: v for k, v in said.items() if rng.random() < keep}
    if not kept and said:
        k = list(said)[int(rng.integers(len(said)))]
        kept = {k: said[k]}
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    head = [pick(OPENINGS)]
    if "pitch" in kept and rng.random() < 0.5:  # "a low pitched ..." before the noun, or after it
        head.append(pick(PITCH_BEFORE).format(kept.pop("pitch")))
    if "timbre" in kept:
        head.append(kept.pop("timbre"))
    if "gender" in kept:
        head.append(pick(GENDER_WORDS[kept.pop("gender")]))
    head.append(pick(NOUNS))
    tail = []
    if "pitch" in kept:
        tail.append(pick(PITCH_AFTER).format(kept.pop("pitch")))
    if "pace" in kept:
        tail.append(pick(PACE_FORMS).format(kept.pop("pace")))
    if "language" in kept:
        tail.append(pick(LANGUAGE_FORMS).format(kept.pop("language")))
    order = rng.permutation(len(tail))
    text = " ".join(w for w in head if w)
    for i in order:
        text += pick(JOINERS) + tail[i]
    return text


def _vocabulary() -> tuple[str, ...]:
    phrases = [*LANGUAGE_NAMES.values(), *TIMBRES.values(), *LEVELS, *PACES, *OPENINGS, *NOUNS,
               *(w for words in GENDER_WORDS.values() for w in words),
               *PITCH_BEFORE, *PITCH_AFTER, *PACE_FORMS, *LANGUAGE_FORMS, *JOINERS]
    return tuple(sorted({w for p in phrases for w in _WORD.findall(p.lower())}))


VOCAB = _vocabulary()
PAD = 0
_IDS = {w: i + 1 for i, w in enumerate(VOCAB)}  # 0 is padding
VOCAB_SIZE = len(VOCAB) + 1


def words(description: str) -> list[str]:
    return _WORD.findall(description.lower())


def encode(description: str, max_len: int) -> tuple[np.ndarray, list[str]]:
    """Word ids [n ≤ max_len] (int32) of the words T2V knows, and the words it does not know."""
    ids, unknown = [], []
    for w in words(description):
        (ids.append(_IDS[w]) if w in _IDS else unknown.append(w))
    if len(ids) > max_len:
        raise ValueError(f"the description has {len(ids)} known words; this T2V model reads at most {max_len}")
    return np.asarray(ids, np.int32), unknown
