"""Random-access corpus sources (TFDS array_record, read without TensorFlow) and an index of their records."""
from __future__ import annotations

import json
import logging
import os
import uuid


def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def open_source(name: str, data_dir: str, split: str):
    """`tfds.data_source` over a prepared corpus; a clear error when it was not prepared."""
    # TFDS rebuilds the features from the corpus's own dataset_info.json, so no builder import is needed.
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, data_dir=data_dir, split=split, download=False)
    except Exception as e:
        raise FileNotFoundError(
            f"corpus {name!r} split {split!r} not found under {data_dir!r} ({type(e).__name__}: {e}); "
            f"run `speech-jax prepare --dataset {name.split('/')[0]} --data-dir {data_dir}` first") from e


# What a batch is planned from without reading any audio (see `record_index`).
INDEX_FIELDS = ("speaker", "utt_id", "text", "language", "samples", "sample_rate")


def record_index(source, cache_path: str | None = None) -> dict[str, list]:
    """Per record, in record order: its speaker, utterance id, text, language and audio length (samples at
    its own sample rate). Every host plans each global batch from this (which records are usable, how long
    each is) and reads the audio of its own rows only. Built once by reading every record, and cached beside
    the data: reading all records is slow."""
    if cache_path and os.path.exists(cache_path):
        try:
            with open(cache_path) as f:
                index = json.load(f)
            if (isinstance(index, dict) and set(index) == set(INDEX_FIELDS)
                    and all(len(v) == len(source) for v in index.values())):
                return index
        except (OSError, json.JSONDecodeError):
            pass  # a stale or damaged cache is rebuilt
    index = {k: [] for k in INDEX_FIELDS}
    for i in range(len(source)):
        record = source[i]
        for k in ("speaker", "utt_id", "text"):
            index[k].append(_str(record[k]))
        index["language"].append(_str(record["language"]) if "language" in record else "")
        index["samples"].append(int(len(record["audio"])))
        index["sample_rate"].append(int(record["sample_rate"]))
    if cache_path:
        try:
            # A name of its own: several processes (hosts, Grain workers) may build the index at once.
            tmp = f"{cache_path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "w") as f:
                json.dump(index, f)
            os.replace(tmp, cache_path)
        except OSError as e:  # read-only data directory: keep the index in memory only
            logging.info("could not cache the record index at %s: %s", cache_path, e)
    return index


def split_index(name: str, data_dir: str, split: str, source=None) -> dict[str, list]:
    """`record_index` of a prepared split, cached in its corpus directory."""
    source = open_source(name, data_dir, split) if source is None else source
    return record_index(source, os.path.join(corpus_dir(name, data_dir), f"records.{split}.json"))


def corpus_dir(name: str, data_dir: str) -> str:
    """The directory holding the newest version of a prepared corpus."""
    base = os.path.join(data_dir, *name.split("/"))
    if not os.path.isdir(base):
        return base
    versions = sorted(v for v in os.listdir(base) if v[:1].isdigit())
    return os.path.join(base, versions[-1]) if versions else base
