"""Splits for corpora that define none: a speaker-disjoint `test_unseen` (zero-shot voices) and a
`validation` of held-out utterances of seen speakers. Every choice is ranked by a seeded hash of the
speaker or utterance id, so it never moves when other files are added or the order of listing changes."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import defaultdict


# The splits `assign` makes for a corpus that has none of its own, in the order they are written.
SPLITS = ("train", "validation", "test_unseen")


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    unseen_fraction: float = 0.1  # of the speakers, held out whole for test_unseen
    max_unseen_speakers: int = 100
    validation_fraction: float = 0.01  # of a chosen seen speaker's utterances
    max_validation_speakers: int = 200
    seed: int = 0


def _rank(seed: int, *parts: str) -> bytes:
    return hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()


def speaker_roles(counts: dict[str, int], spec: SplitSpec) -> dict[str, int | None]:
    """{speaker: None when held out whole for test_unseen, else how many of its utterances go to
    validation}, from each speaker's count of utterances without a split of their own.

    test_unseen needs at least 3 speakers (2 stay seen); validation takes, from up to
    `max_validation_speakers` seen speakers with 3 or more utterances, round(fraction · n) of each
    (at least 1, and always leaving 2 in train so each training utterance has a same-speaker reference).
    """
    speakers = sorted(counts, key=lambda s: _rank(spec.seed, "speaker", s))
    n_unseen = 0
    if len(speakers) >= 3:
        n_unseen = min(spec.max_unseen_speakers, len(speakers) - 2,
                       max(1, round(spec.unseen_fraction * len(speakers))))
    roles: dict[str, int | None] = {s: None for s in speakers[:n_unseen]}
    validation_speakers = 0
    for s in speakers[n_unseen:]:
        n, n_val = counts[s], 0
        if n >= 3 and validation_speakers < spec.max_validation_speakers:
            n_val = min(n - 2, max(1, round(spec.validation_fraction * n)))
            validation_speakers += 1
        roles[s] = n_val
    return roles


def split_speaker(utts: list[tuple], role: int | None, spec: SplitSpec) -> list[tuple[str, tuple]]:
    """One speaker's (listing position, utterance) pairs, each with its split under `role`."""
    if role is None:
        return [("test_unseen", pu) for pu in utts]
    group = sorted(utts, key=lambda pu: (_rank(spec.seed, "utt", pu[1].utt_id), pu[0]))
    return [("validation", pu) for pu in group[:role]] + [("train", pu) for pu in group[role:]]


def assign(utts: list, spec: SplitSpec) -> dict[str, list]:
    """{split: utterances} for utterances whose `.split` is None (`speaker_roles`); those with a split keep it."""
    out: dict[str, list] = defaultdict(list)
    by_speaker: dict[str, list] = defaultdict(list)
    for i, u in enumerate(utts):
        if u.split is not None:
            out[u.split].append((i, u))
        else:
            by_speaker[u.speaker].append((i, u))
    roles = speaker_roles({s: len(group) for s, group in by_speaker.items()}, spec)
    for s, group in by_speaker.items():
        for split, pu in split_speaker(group, roles[s], spec):
            out[split].append(pu)
    # Listing order within a split (not hash order): neighbouring files stay neighbours on disk.
    return {k: [u for _, u in sorted(v, key=lambda pu: pu[0])] for k, v in out.items() if v}
