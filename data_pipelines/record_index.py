"""The record index: per record of a split, what a batch is planned from without reading any audio (its
speaker, utterance id, text, language and length), as columns of numpy arrays memory-mapped from beside the
data. A corpus of millions of utterances then costs each process, and each Grain worker, only the pages it
touches, not a Python object per field per record; a worker receives the index as its directory's name."""
from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from array import array
from typing import Iterator, Mapping, Sequence

import numpy as np

from data_pipelines.sources import _str

FIELDS = ("speaker", "utt_id", "text", "language", "samples", "sample_rate")
_CATEGORIES = ("speaker", "language")  # few distinct values: a code per record into a list of names
_STRINGS = ("utt_id", "text")  # one UTF-8 buffer per field and each record's offset into it
_INTEGERS = ("samples", "sample_rate")
_FORMAT = 1


class Strings(Sequence[str]):
    """Record i's string is `data[offsets[i]:offsets[i + 1]]`, decoded on access."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return bytes(self.data[self.offsets[i]:self.offsets[i + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class Categories(Sequence[str]):
    """Record i's value is `names[codes[i]]`; `names` lists the distinct values, sorted."""

    def __init__(self, codes: np.ndarray, names: list[str]):
        self.codes, self.names = codes, names

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, i: int) -> str:
        return self.names[self.codes[int(i)]]

    def __iter__(self) -> Iterator[str]:
        return (self.names[c] for c in self.codes)

    def isin(self, values) -> np.ndarray:
        """Whether each record's value is one of `values`."""
        values = set(values)
        wanted = [k for k, name in enumerate(self.names) if name in values]
        return np.isin(self.codes, wanted)

    def groups(self) -> dict[str, np.ndarray]:
        """Each value's records, in record order."""
        order = np.argsort(self.codes, kind="stable")
        bounds = np.searchsorted(self.codes[order], np.arange(len(self.names) + 1))
        return {name: order[bounds[k]:bounds[k + 1]] for k, name in enumerate(self.names)
                if bounds[k + 1] > bounds[k]}


class RecordIndex(Mapping[str, Sequence]):
    """The index's columns by field name (`FIELDS`): sequences of strings for the first four, integer arrays
    for the lengths. `len` is the number of fields, `num_records` that of records."""

    def __init__(self, arrays: dict[str, np.ndarray], names: dict[str, list[str]], directory: str | None = None):
        self.arrays, self.names, self.directory = arrays, names, directory
        self.columns: dict[str, Sequence] = {f: Categories(arrays[f], names[f]) for f in _CATEGORIES}
        self.columns |= {f: Strings(arrays[f], arrays[f + ".offsets"]) for f in _STRINGS}
        self.columns |= {f: arrays[f] for f in _INTEGERS}
        self.num_records = len(arrays["samples"])

    def __getitem__(self, field: str) -> Sequence:
        return self.columns[field]

    def __iter__(self) -> Iterator[str]:
        return iter(FIELDS)

    def __len__(self) -> int:
        return len(FIELDS)

    def __reduce__(self):  # a memory-mapped index travels to other processes as its directory's name
        if self.directory is not None:
            return load, (self.directory,)
        return RecordIndex, (dict(self.arrays), self.names)

    def save(self, directory: str) -> None:
        os.makedirs(directory)
        for name, a in self.arrays.items():
            np.save(os.path.join(directory, name + ".npy"), np.asarray(a))
        with open(os.path.join(directory, "index.json"), "w") as f:
            json.dump({"format": _FORMAT, "records": self.num_records, "names": self.names}, f)


def _open(path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except ValueError:  # an empty array has no pages to map
        return np.load(path)


def load(directory: str) -> RecordIndex:
    with open(os.path.join(directory, "index.json")) as f:
        meta = json.load(f)
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{directory}: record index format {meta.get('format')}, expected {_FORMAT}")
    names = [*_CATEGORIES, *_STRINGS, *(f + ".offsets" for f in _STRINGS), *_INTEGERS]
    arrays = {name: _open(os.path.join(directory, name + ".npy")) for name in names}
    index = RecordIndex(arrays, meta["names"], directory)
    n = meta["records"]
    if not all(len(index[f]) == n for f in FIELDS) or any(len(index[f].data) != index[f].offsets[-1]
                                                          for f in _STRINGS):
        raise ValueError(f"{directory}: columns of different lengths")
    return index


def build(source) -> RecordIndex:
    """The index of `source`, by reading every record once (its audio's length included: slow)."""
    def rows():
        for i in range(len(source)):
            r = source[i]
            yield (_str(r["speaker"]), _str(r["utt_id"]), _str(r["text"]),
                   _str(r["language"]) if "language" in r else "", len(r["audio"]), int(r["sample_rate"]))
    return _from_rows(rows())


def _from_rows(rows) -> RecordIndex:
    """An index from each record's values in `FIELDS` order."""
    codes = {f: array("i") for f in _CATEGORIES}
    seen: dict[str, dict[str, int]] = {f: {} for f in _CATEGORIES}
    buffers = {f: bytearray() for f in _STRINGS}
    offsets = {f: array("q", [0]) for f in _STRINGS}
    integers = {f: array("q") for f in _INTEGERS}
    for row in rows:
        record = dict(zip(FIELDS, row))
        for f in _CATEGORIES:
            codes[f].append(seen[f].setdefault(record[f], len(seen[f])))
        for f in _STRINGS:
            buffers[f] += record[f].encode("utf-8")
            offsets[f].append(len(buffers[f]))
        for f in _INTEGERS:
            integers[f].append(int(record[f]))
    arrays, names = {}, {}
    for f in _CATEGORIES:  # codes renumbered so that names are sorted: groups come out in name order
        names[f] = sorted(seen[f])
        position = {name: k for k, name in enumerate(names[f])}
        renumber = np.asarray([position[v] for v in seen[f]], np.int32)
        arrays[f] = renumber[np.frombuffer(codes[f], np.int32)] if len(codes[f]) else np.zeros(0, np.int32)
    for f in _STRINGS:
        arrays[f] = np.frombuffer(bytes(buffers[f]), np.uint8)
        arrays[f + ".offsets"] = np.frombuffer(offsets[f], np.int64)
    for f in _INTEGERS:
        arrays[f] = np.frombuffer(integers[f], np.int64)
    return RecordIndex(arrays, names)


def _from_json(path: str, num_records: int) -> RecordIndex | None:
    """The index an earlier version kept as JSON lists beside the data (saves reading every record again)."""
    try:
        with open(path) as f:
            lists = json.load(f)
        if isinstance(lists, dict) and all(len(lists.get(f, ())) == num_records for f in FIELDS):
            return _from_rows(zip(*(lists[f] for f in FIELDS)))
    except (OSError, ValueError, TypeError):
        pass  # missing or damaged: read the records
    return None


def record_index(source, directory: str | None = None) -> RecordIndex:
    """`source`'s index, from `directory` when it holds one of as many records; else built (reading every
    record) and saved there, replacing a stale or damaged one."""
    if directory and os.path.exists(directory):
        try:
            index = load(directory)
            if index.num_records == len(source):
                return index
        except (OSError, ValueError, KeyError, TypeError) as e:
            logging.info("rebuilding the record index %s: %s", directory, e)
    legacy = directory and _from_json(directory + ".json", len(source))
    index = legacy or build(source)
    if not directory:
        return index
    # A name of its own: several processes (hosts, Grain workers) may build the index at once.
    tmp = f"{directory}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        index.save(tmp)
        if os.path.exists(directory):
            shutil.rmtree(directory, ignore_errors=True)  # stale or damaged
        os.rename(tmp, directory)
    except OSError as e:  # a read-only data directory, or another process saved it first
        shutil.rmtree(tmp, ignore_errors=True)
        logging.info("did not save the record index at %s: %s", directory, e)
        return index
    if legacy:  # converted: the JSON goes, so that deleting a stale index rebuilds it from the records
        os.remove(directory + ".json")
    return load(directory)
