"""Random-access corpus sources (TFDS array_record, read without TensorFlow) and a speaker index."""
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


def speaker_index(source, cache_path: str | None = None) -> list[str]:
    """The speaker of every record, in record order; cached beside the data (reading all records is slow)."""
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            speakers = json.load(f)
        if len(speakers) == len(source):
            return speakers
    speakers = [_str(source[i]["speaker"]) for i in range(len(source))]
    if cache_path:
        try:
            # A name of its own: several processes (hosts, Grain workers) may build the index at once.
            tmp = f"{cache_path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "w") as f:
                json.dump(speakers, f)
            os.replace(tmp, cache_path)
        except OSError as e:  # read-only data directory: keep the index in memory only
            logging.info("could not cache speaker index at %s: %s", cache_path, e)
    return speakers


def corpus_dir(name: str, data_dir: str) -> str:
    """The directory holding the newest version of a prepared corpus."""
    base = os.path.join(data_dir, *name.split("/"))
    if not os.path.isdir(base):
        return base
    versions = sorted(v for v in os.listdir(base) if v[:1].isdigit())
    return os.path.join(base, versions[-1]) if versions else base
