"""Random-access corpus sources (TFDS array_record, read without TensorFlow) and an index of their records."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_pipelines.record_index import RecordIndex


def _str(x) -> str:
    """A record's string field as TFDS returns it (bytes) or as a str."""
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


def split_index(name: str, data_dir: str, split: str, source=None) -> RecordIndex:
    """The record index of a prepared split, kept in its corpus directory (`records.<split>/`)."""
    from data_pipelines.record_index import record_index
    source = open_source(name, data_dir, split) if source is None else source
    return record_index(source, os.path.join(corpus_dir(name, data_dir), f"records.{split}"))


def corpus_dir(name: str, data_dir: str) -> str:
    """The directory holding the newest version of a prepared corpus."""
    base = os.path.join(data_dir, *name.split("/"))
    if not os.path.isdir(base):
        return base
    versions = sorted(v for v in os.listdir(base) if v[:1].isdigit())
    return os.path.join(base, versions[-1]) if versions else base
