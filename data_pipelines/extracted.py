"""Derived features beside a corpus: 25 Hz audio tokens and 50 Hz Flow-VAE latents per utterance.

`speech-jax extract` writes them as array_record shards aligned record-for-record with the corpus
split (record i of `<split>` ↔ record i of the corpus split), under
`<corpus>/extracted/<tag>/<split>.array_record-NNNNN-of-MMMMM`, plus `meta.json`. Each record is a
msgpack dict {"tokens": int32 [N], "latents": float16|float32 [2N, D] (when a Flow-VAE was given)}.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
from flax import serialization

from data_pipelines.sources import corpus_dir

META = "meta.json"


def extracted_dir(name: str, data_dir: str, tag: str) -> str:
    return os.path.join(corpus_dir(name, data_dir), "extracted", tag)


def shard_path(directory: str, split: str, shard: int, num_shards: int) -> str:
    return os.path.join(directory, f"{split}.array_record-{shard:05d}-of-{num_shards:05d}")


def encode_record(tokens: np.ndarray, latents: np.ndarray | None) -> bytes:
    rec = {"tokens": np.asarray(tokens, np.int32)}
    if latents is not None:
        rec["latents"] = np.asarray(latents)
    return serialization.msgpack_serialize(rec)


def decode_record(raw: bytes) -> dict:
    return serialization.msgpack_restore(raw)


def read_meta(directory: str) -> dict:
    path = os.path.join(directory, META)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no extracted features in {directory!r}: run `speech-jax extract` first")
    with open(path) as f:
        return json.load(f)


class ExtractedSource:
    """Random access to one split's extracted features, in corpus record order."""

    def __init__(self, directory: str, split: str, *, require_complete: bool = True):
        meta = read_meta(directory)
        if require_complete and not meta.get("complete", {}).get(split):
            raise FileNotFoundError(f"extraction of split {split!r} in {directory!r} is not complete; "
                                    f"re-run `speech-jax extract` (it resumes)")
        from array_record.python.array_record_data_source import ArrayRecordDataSource
        files = sorted(glob.glob(os.path.join(directory, f"{split}.array_record-*")))
        self.meta = meta
        self._source = ArrayRecordDataSource(files)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        return decode_record(self._source[int(index)])
