"""Splits for corpora that define none: a speaker-disjoint `test_unseen` (zero-shot voices) and a
`validation` of held-out utterances of seen speakers. Every choice is ranked by a seeded hash of the
speaker or utterance id, so it never moves when other files are added or the order of listing changes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    unseen_fraction: float = 0.1  # of the speakers, held out whole for test_unseen
    max_unseen_speakers: int = 100
    validation_fraction: float = 0.01  # of a chosen seen speaker's utterances
    max_validation_speakers: int = 200
    seed: int = 0


def _rank(seed: int, *parts: str) -> bytes:
    return hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()


def assign(utts: list, spec: SplitSpec) -> dict[str, list]:
    """{split: utterances} for utterances whose `.split` is None; those with a split keep it.

    test_unseen needs at least 3 speakers (2 stay seen); validation takes, from up to
    `max_validation_speakers` seen speakers with 3 or more utterances, round(fraction · n) of each
    (at least 1, and always leaving 2 in train so each training utterance has a same-speaker reference).
    """
    out: dict[str, list] = defaultdict(list)
    by_speaker: dict[str, list] = defaultdict(list)
    for u in utts:
        if u.split is not None:
            out[u.split].append(u)
        else:
            by_speaker[u.speaker].append(u)
    speakers = sorted(by_speaker, key=lambda s: _rank(spec.seed, "speaker", s))
    n_unseen = 0
    if len(speakers) >= 3:
        n_unseen = min(spec.max_unseen_speakers, len(speakers) - 2,
                       max(1, round(spec.unseen_fraction * len(speakers))))
    for s in speakers[:n_unseen]:
        out["test_unseen"].extend(by_speaker[s])
    validation_speakers = 0
    for s in speakers[n_unseen:]:
        group = sorted(by_speaker[s], key=lambda u: _rank(spec.seed, "utt", u.utt_id))
        n_val = 0
        if len(group) >= 3 and validation_speakers < spec.max_validation_speakers:
            n_val = min(len(group) - 2, max(1, round(spec.validation_fraction * len(group))))
            validation_speakers += 1
        out["validation"].extend(group[:n_val])
        out["train"].extend(group[n_val:])
    # Listing order within a split (not hash order): neighbouring files stay neighbours on disk.
    order = {id(u): i for i, u in enumerate(utts)}
    return {k: sorted(v, key=lambda u: order[id(u)]) for k, v in out.items() if v}
