"""Speakers of the embedded corpus: espeak language x voice variant x pitch x rate.

A speaker is fully described by its `Voice`, so the same seed always yields the same
speakers and the same audio. Variants, pitches and rates are spread so that speakers
differ audibly (timbre from the variant, f0 from pitch, tempo from rate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

# espeak voice names of the languages we ship sentences for (all checked to produce audio).
LANGUAGES = ("en", "cmn", "yue", "ja", "ko", "de", "fr", "es")

# Variants from espeak-ng-data/voices/!v with clearly different timbres; the empty string is
# the language's default voice.
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "croak", "whisper", "Andy", "Annie", "Denis",
            "Michael", "anika", "belinda", "boris", "david", "edward", "iven", "linda",
            "max", "steph", "travis", "zac")
PITCHES = (30, 40, 50, 60, 70)  # espeakPITCH, 0..100, default 50
RATES = (135, 150, 165, 180, 195)  # espeakRATE in words per minute, default 175

# Speaking styles espeak can render (the style corpora, for LoRA style control): a factor on the voice's
# rate and a pitch range (espeakRANGE, 0 = monotone, 50 = the voice's own, 100 = twice its excursions).
STYLES = {"lively": dict(rate_factor=1.3, pitch_range=95), "calm": dict(rate_factor=0.75, pitch_range=12)}


@dataclasses.dataclass(frozen=True, order=True)
class Voice:
    """One synthetic speaker."""

    language: str
    variant: str = ""
    pitch: int = 50
    rate: int = 175
    pitch_range: int = 50  # espeakRANGE, 0..100
    style: str = ""        # a STYLES key: how this speaker speaks here; not part of who they are (`id`)

    @property
    def espeak_rate(self) -> int:
        return round(self.rate * STYLES[self.style]["rate_factor"]) if self.style else self.rate

    @property
    def espeak_range(self) -> int:
        return STYLES[self.style]["pitch_range"] if self.style else self.pitch_range

    def styled(self, style: str) -> "Voice":
        if style and style not in STYLES:
            raise ValueError(f"unknown style {style!r}; known: {', '.join(STYLES)}")
        return dataclasses.replace(self, style=style)

    @property
    def espeak_name(self) -> str:
        """Name for espeak_SetVoiceByName, e.g. 'en+m3'."""
        return f"{self.language}+{self.variant}" if self.variant else self.language

    @property
    def id(self) -> str:
        """Stable speaker id, e.g. 'en-m3-p45-r165'."""
        return f"{self.language}-{self.variant or 'default'}-p{self.pitch}-r{self.rate}"


def _rng(seed: int, *parts: str) -> random.Random:
    # Hash-derived so that changing one language's count never reshuffles the others.
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def make_speakers(languages: tuple[str, ...] | list[str], per_language: int,
                  seed: int = 0) -> list[Voice]:
    """`per_language` distinct voices for each language, deterministic from `seed`."""
    speakers = []
    for lang in languages:
        rng = _rng(seed, "speakers", lang)
        combos = [(v, p, r) for v in VARIANTS for p in PITCHES for r in RATES]
        rng.shuffle(combos)
        chosen, used_variants = [], set()
        # Prefer a new variant per speaker so timbres differ; fall back to repeats if asked for many.
        for v, p, r in combos:
            if len(chosen) == per_language:
                break
            if v in used_variants and len(used_variants) < len(VARIANTS):
                continue
            used_variants.add(v)
            chosen.append(Voice(lang, v, p, r))
        for combo in combos:  # only reached when per_language > len(VARIANTS)
            if len(chosen) == per_language:
                break
            voice = Voice(lang, *combo)
            if voice not in chosen:
                chosen.append(voice)
        speakers.extend(chosen)
    return speakers


def split_speakers(speakers: list[Voice], unseen_per_language: int,
                   seed: int = 0) -> tuple[list[Voice], list[Voice]]:
    """Hold out `unseen_per_language` speakers of each language; returns (seen, unseen).

    A language keeps at least one seen speaker, so it never holds out all of them.
    """
    seen, unseen = [], []
    for lang in sorted({s.language for s in speakers}):
        group = sorted(s for s in speakers if s.language == lang)
        _rng(seed, "unseen", lang).shuffle(group)
        n = min(unseen_per_language, len(group) - 1)
        unseen.extend(group[:n])
        seen.extend(group[n:])
    order = {s: i for i, s in enumerate(speakers)}
    return sorted(seen, key=order.get), sorted(unseen, key=order.get)
