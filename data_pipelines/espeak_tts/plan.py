"""Which speaker says which sentence in which split: a pure function of the config.

train       seen speakers x training sentences (+ sentences re-mixed from their words)
validation  seen speakers x held-out sentences
test_unseen held-out speakers x held-out sentences (zero-shot: new voice and new text)
"""

from __future__ import annotations

import dataclasses
import random

from data_pipelines.espeak_tts import sentences as sentences_lib
from data_pipelines.espeak_tts import voices
from data_pipelines.espeak_tts.render import Utterance

SPLITS = ("train", "validation", "test_unseen")


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    languages: tuple[str, ...] = voices.LANGUAGES
    speakers_per_language: int = 4
    unseen_per_language: int = 1
    train_per_speaker: int | None = 3  # None: every training sentence
    mixed_per_speaker: int = 0  # training utterances of re-mixed training words (sentences.mixed_sentence)
    validation_per_speaker: int = 1
    test_per_speaker: int = 2
    heldout_fraction: float = 0.15
    seed: int = 0
    style: str = ""  # every utterance in this style (voices.STYLES); the speakers keep their ids


def _pick(pool: list[int], count: int | None, rng: random.Random) -> list[int]:
    if count is None or count >= len(pool):
        return list(pool)
    return sorted(rng.sample(pool, count))


def make_plan(spec: CorpusSpec) -> dict[str, list[Utterance]]:
    """Utterances of each split; utt_id = '<speaker id>_<sentence line index>' is unique."""
    plan = {split: [] for split in SPLITS}
    speakers = voices.make_speakers(spec.languages, spec.speakers_per_language, spec.seed)
    seen, unseen = voices.split_speakers(speakers, spec.unseen_per_language, spec.seed)
    unseen_ids = {v.id for v in unseen}
    minimum_heldout = max(spec.validation_per_speaker, spec.test_per_speaker)
    for lang in spec.languages:
        texts = sentences_lib.load_sentences(lang)
        heldout = sentences_lib.heldout_indices(lang, spec.seed, spec.heldout_fraction,
                                                minimum_heldout)
        train_pool = [i for i in range(len(texts)) if i not in heldout]
        heldout_pool = sorted(heldout)
        for voice in (s for s in speakers if s.language == lang):
            rng = random.Random(f"{spec.seed}/plan/{voice.id}")
            if voice.id in unseen_ids:
                jobs = [("test_unseen", _pick(heldout_pool, spec.test_per_speaker, rng))]
            else:
                jobs = [("train", _pick(train_pool, spec.train_per_speaker, rng)),
                        ("validation", _pick(heldout_pool, spec.validation_per_speaker, rng))]
            for split, indices in jobs:
                plan[split].extend(Utterance(f"{voice.id}_{i:03d}", split, voice.styled(spec.style), texts[i])
                                   for i in indices)
            if voice.id not in unseen_ids and spec.mixed_per_speaker:
                mix_rng = random.Random(f"{spec.seed}/mixed/{voice.id}")
                plan["train"].extend(
                    Utterance(f"{voice.id}_m{k:03d}", "train", voice,
                              sentences_lib.mixed_sentence(lang, train_pool, mix_rng))
                    for k in range(spec.mixed_per_speaker))
    return plan
