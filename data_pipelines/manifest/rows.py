"""Reading a user's manifest: CSV or JSONL rows of wav_path, text, speaker[, language, split, utt_id]."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

REQUIRED = ("wav_path", "text", "speaker")
DEFAULT_LANGUAGE = "und"  # BCP 47 "undetermined"
DEFAULT_SPLIT = "train"
_SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # what TFDS accepts as a split name


class ManifestError(ValueError):
    """The manifest itself is unusable (missing file or column, bad split name, duplicate id)."""


@dataclasses.dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the manifest, for messages
    wav_path: str  # resolved: relative paths are taken from the manifest's folder
    text: str
    speaker: str
    language: str
    split: str
    utt_id: str


def _records(path: str):
    """(line number, dict) for every data line of a CSV or JSONL file."""
    with open(path, encoding="utf-8", newline="") as f:
        if path.lower().endswith((".jsonl", ".json")):
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ManifestError(f"{path}:{n}: not valid JSON ({e})") from None
                    if not isinstance(record, dict):
                        raise ManifestError(f"{path}:{n}: expected a JSON object per line")
                    yield n, record
        else:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{path}: missing column(s) {missing}; "
                                    f"header is {reader.fieldnames}, need {list(REQUIRED)}")
            for record in reader:
                yield reader.line_num, record


def _default_utt_id(wav_path: str) -> str:
    return re.sub(r"[^\w\-.]+", "_", os.path.splitext(wav_path)[0]).strip("_")


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """All rows of the manifest. Row-level problems (bad audio, empty text) are left to the
    builder so they can be skipped; problems with the manifest itself raise ManifestError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError(f"manifest {path} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    rows, seen_ids = [], {}
    for n, record in _records(path):
        missing = [c for c in REQUIRED if record.get(c) is None]
        if missing:
            raise ManifestError(f"{path}:{n}: missing field(s) {missing}")
        wav = str(record["wav_path"]).strip()
        split = str(record.get("split") or DEFAULT_SPLIT).strip()
        if not _SPLIT_NAME.match(split):
            raise ManifestError(f"{path}:{n}: split {split!r} is not a valid split name "
                                "(lower-case letters, digits, underscores)")
        utt_id = str(record.get("utt_id") or _default_utt_id(wav))
        if utt_id in seen_ids:
            raise ManifestError(f"{path}:{n}: utt_id {utt_id!r} repeats line {seen_ids[utt_id]}; "
                                "give each row a unique wav_path or utt_id")
        seen_ids[utt_id] = n
        rows.append(Row(
            line=n,
            wav_path=wav if os.path.isabs(wav) else os.path.join(base, wav),
            text=str(record["text"]),
            speaker=str(record["speaker"]).strip(),
            language=str(record.get("language") or DEFAULT_LANGUAGE).strip(),
            split=split,
            utt_id=utt_id,
        ))
    if not rows:
        raise ManifestError(f"manifest {path} has no rows")
    return rows
