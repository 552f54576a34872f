"""A Kaldi data directory: `wav.scp`, `text`, `utt2spk`, optional `segments` and `spk2gender`.

`manual_dir` is one data directory (split here: speaker-disjoint test_unseen, held-out validation) or holds
several (`train/`, `dev/`, `test/` ...), each a split named after its folder (dev and valid -> validation).
wav.scp entries are paths (relative ones are taken from the data directory, then from `manual_dir` and its
parent, as recipes keep them) or Kaldi's extended filenames, commands ending in '|' whose output is audio."""

from __future__ import annotations

import os
import re

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.corpora.base import CorpusBuilder
from data_pipelines.corpora.process import Utterance

_SPLIT_ALIASES = {"dev": "validation", "valid": "validation", "val": "validation"}


def _table(path: epath.Path, columns: int | None = None) -> dict[str, str | list[str]]:
    """First field -> the rest of the line (or, with `columns`, the rest split into fields)."""
    out = {}
    if not path.exists():
        return out
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        key, _, rest = line.strip().partition(" ")
        if not key:
            continue
        rest = rest.strip()
        if columns is not None:
            rest = rest.split()
            if len(rest) != columns:
                raise ValueError(f"{path}:{n}: expected {columns + 1} fields, got {line!r}")
        out[key] = rest
    return out


def _resolve(entry: str, bases: list[epath.Path]) -> str:
    if entry.endswith("|") or os.path.isabs(entry):
        return entry
    for base in bases:
        if (base / entry).exists():
            return str(base / entry)
    return str(bases[0] / entry)  # reported as 'no such file' with the first place looked


def read_data_dir(folder: epath.Path, root: epath.Path, split: str | None) -> list[Utterance]:
    for required in ("wav.scp", "text"):
        if not (folder / required).exists():
            raise FileNotFoundError(f"{folder} is not a Kaldi data directory: no {required}")
    bases = [folder, root, root.parent]
    recordings = {k: _resolve(v, bases) for k, v in _table(folder / "wav.scp").items()}
    texts = _table(folder / "text")
    utt2spk = _table(folder / "utt2spk")
    genders = _table(folder / "spk2gender")
    segments = _table(folder / "segments", columns=3)
    utts = []
    for utt_id in sorted(segments or recordings):
        start, end = 0.0, None
        if segments:
            rec, start, end = segments[utt_id][0], float(segments[utt_id][1]), float(segments[utt_id][2])
            end = None if end < 0 else end  # Kaldi: -1 means to the end of the recording
            path = recordings.get(rec, f"{folder / 'wav.scp'}: no recording {rec}")
        else:
            path = recordings[utt_id]
        # No utt2spk entry: Kaldi's convention for unknown speakers is each utterance its own.
        speaker = utt2spk.get(utt_id, utt_id)
        utts.append(Utterance(utt_id, speaker, texts.get(utt_id), path, "und", split, start, end,
                              extras=(("gender", genders.get(speaker, "")),)))
    return utts


class Kaldi(CorpusBuilder):
    """A team's own corpus in a Kaldi data directory."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """A Kaldi data directory (or a folder of them, one per split):
  <manual_dir>/wav.scp      <recording-id> <path, or a command ending in '|'>
  <manual_dir>/text         <utterance-id> <transcript>
  <manual_dir>/utt2spk      <utterance-id> <speaker-id>
  <manual_dir>/segments     <utterance-id> <recording-id> <start s> <end s>   (optional)
  <manual_dir>/spk2gender   <speaker-id> <m|f>                                 (optional)
Set the language with --language (default 'und')."""
    EXTRA_FEATURES = {"gender": tfds.features.Text()}

    def list_utterances(self, root):
        if (root / "wav.scp").exists():
            return read_data_dir(root, root, None)
        utts = []
        for folder in sorted(p for p in root.iterdir() if (p / "wav.scp").exists()):
            name = re.sub(r"[^a-z0-9_]+", "_", folder.name.lower()).strip("_")
            utts += read_data_dir(folder, root, _SPLIT_ALIASES.get(name, name))
        return utts
