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


def read_meta(directory: str, missing_ok: bool = False) -> dict:
    """The extraction's metadata ({} where there is none yet and `missing_ok`); a damaged file is a clear error
    that names it, not a JSON parser's message."""
    path = os.path.join(directory, META)
    if not os.path.exists(path):
        if missing_ok:
            return {}
        raise FileNotFoundError(f"no extracted features in {directory!r}: run `speech-jax extract` first")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"damaged extraction metadata {path!r} ({e}): delete {directory!r} and run "
                             "`speech-jax extract` again") from e


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


def latent_statistics(directory: str, split: str = "train", max_records: int = 4096) -> dict:
    """Per-channel mean and standard deviation of one split's latents, over the frames of up to
    `max_records` records spread evenly over the split (deterministic: every host computes the same).

    -> {"mean": float32 [D], "std": float32 [D], "frames": int}."""
    source = ExtractedSource(directory, split)
    n = len(source)
    if n == 0:
        raise ValueError(f"no {split} records in {directory!r} to take latent statistics from")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_records)).round().astype(int))
    total = square = frames = 0
    for i in picks:
        rec = source[i]
        if "latents" not in rec:
            raise ValueError(f"{directory!r} holds no latents: extract with --flow-vae")
        z = np.asarray(rec["latents"], np.float64)
        total, square, frames = total + z.sum(0), square + np.square(z).sum(0), frames + z.shape[0]
    if not frames:
        raise ValueError(f"the sampled {split} records in {directory!r} have no latent frames")
    mean = total / frames
    std = np.sqrt(np.maximum(square / frames - np.square(mean), 0.0))
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "frames": int(frames)}
