"""`speech-jax extract`: run the trained tokenizer (and Flow-VAE encoder) over every utterance of a corpus.

Batches are sharded over this process's devices (data-parallel, weights replicated). Work is written in
shards of `shard_size` records, each committed by an atomic rename, so an interrupted run resumes at the
first missing shard. At the end every record is checked to hold tokens of the expected length.

Launched as several processes (a multi-host job; the environment `sharding.maybe_initialize_distributed`
reads), process p of P extracts shards p, p + P, ...: no collective runs inside a model call, so hosts
never wait on each other's batches, only at the barriers around each split, where process 0 alone
verifies the split and writes the metadata.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.extracted import META, encode_record, extracted_dir, read_meta, shard_path
from data_pipelines.sources import open_source


class ExtractError(RuntimeError):
    pass


def _load_audio(record, sample_rate: int) -> np.ndarray:
    from speech_jax.audio.io import resample, to_float32
    audio = to_float32(np.asarray(record["audio"]))
    sr = int(record["sample_rate"])
    return resample(audio, sr, sample_rate) if sr != sample_rate else audio


def weights_fingerprint(module) -> str:
    """A hash of a module's weights: a model retrained in the same workdir is another model."""
    from flax import nnx
    digest = hashlib.sha1()
    for leaf in jax.tree.leaves(jax.device_get(nnx.state(module))):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:16]


class _Encoders:
    """Jitted (tokens, latents) of a padded batch, sharded over a 1-D data mesh of every device."""

    def __init__(self, tokenizer_workdir: str, flow_vae_workdir: str | None):
        from speech_jax.models.audio_tokenizer import encode
        from speech_jax.train.restore import load_model
        self.tok_config, self.tokenizer = load_model(tokenizer_workdir, "tokenizer")
        self.sample_rate = int(self.tok_config.data.sample_rate)
        self.hop = int(self.tok_config.mel.hop_length)
        self.vae = None
        if flow_vae_workdir:
            vae_config, gan = load_model(flow_vae_workdir, "flow_vae")
            self.vae = gan.generator  # the discriminators are for training only
            if int(vae_config.data.sample_rate) != self.sample_rate or self.vae.hop != self.hop:
                raise ExtractError(
                    f"the Flow-VAE ({vae_config.data.sample_rate} Hz, hop {self.vae.hop}) and the tokenizer "
                    f"({self.sample_rate} Hz, hop {self.hop}) must share the sample rate and the 50 Hz frame")
        mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
        self.batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        self.num_devices = mesh.size
        tokenizer, vae = self.tokenizer, self.vae

        def run(audio, audio_len):
            ids, _ = encode(tokenizer, audio, audio_len)
            if vae is None:
                return ids, jnp.zeros((audio.shape[0], 0, 0), jnp.float32)
            mean, _, _ = vae.encode(audio, audio_len)
            return ids, mean.astype(jnp.float32)

        self._run = jax.jit(run)
        self.fingerprints = {"tokenizer_weights": weights_fingerprint(self.tokenizer),
                             "flow_vae_weights": weights_fingerprint(self.vae) if self.vae is not None else None}

    def __call__(self, audio: np.ndarray, audio_len: np.ndarray):
        put = lambda x: jax.device_put(x, self.batch_sharding)  # noqa: E731
        ids, latents = self._run(put(audio), put(audio_len))
        return np.asarray(ids), np.asarray(latents)


def _pad_batch(audios: list[np.ndarray], batch: int, quantum: int):
    longest = max(max(len(a) for a in audios), quantum)
    length = int(math.ceil(longest / quantum) * quantum)  # few distinct shapes: few compilations
    out = np.zeros((batch, length), np.float32)
    lens = np.zeros((batch,), np.int32)
    for i, a in enumerate(audios):
        out[i, :len(a)] = a
        lens[i] = len(a)
    return out, lens


def _write_shard(path: str, records: list[bytes]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter
    tmp = path + ".tmp"
    writer = ArrayRecordWriter(tmp, "group_size:1")
    for r in records:
        writer.write(r)
    writer.close()
    os.replace(tmp, path)  # a shard exists only once it is complete


def _extract_split(enc: _Encoders, source, directory: str, split: str, *, batch_size: int,
                   shard_size: int, latent_dtype) -> int:
    n = len(source)
    num_shards = max(1, math.ceil(n / shard_size))
    quantum = 2 * enc.hop * 25  # pad to whole seconds of 25 Hz tokens at 16 kHz (multiples of 2·hop)
    batch = int(math.ceil(batch_size / enc.num_devices) * enc.num_devices)
    done = 0
    for s in range(jax.process_index(), num_shards, jax.process_count()):
        path = shard_path(directory, split, s, num_shards)
        lo, hi = s * shard_size, min(n, (s + 1) * shard_size)
        if os.path.exists(path):
            done += hi - lo
            continue
        audios = {i: _load_audio(source[i], enc.sample_rate) for i in range(lo, hi)}
        order = sorted(audios, key=lambda i: len(audios[i]))  # similar lengths share a batch
        out: dict[int, bytes] = {}
        for b in range(0, len(order), batch):
            idx = order[b:b + batch]
            audio, lens = _pad_batch([audios[i] for i in idx], batch, quantum)
            ids, latents = enc(audio, lens)
            for j, i in enumerate(idx):
                n_tok = int(lens[j]) // enc.hop // 2
                lat = latents[j, :2 * n_tok].astype(latent_dtype) if enc.vae is not None else None
                out[i] = encode_record(ids[j, :n_tok], lat)
        _write_shard(path, [out[i] for i in range(lo, hi)])
        done += hi - lo
        logging.info("extract %s: %d records of %d (this process's shards)", split, done, n)
    return n


def _verify(enc: _Encoders, source, directory: str, split: str, n: int) -> dict:
    """Every record present, with tokens (and latents) of the length its audio implies."""
    from data_pipelines.extracted import ExtractedSource
    ext = ExtractedSource(directory, split, require_complete=False)
    if len(ext) != n:
        raise ExtractError(f"{split}: {len(ext)} extracted records for {n} utterances")
    empty = 0
    for i in range(n):
        rec = ext[i]
        expected = len(_load_audio(source[i], enc.sample_rate)) // enc.hop // 2
        if len(rec["tokens"]) != expected:
            raise ExtractError(f"{split} record {i}: {len(rec['tokens'])} tokens, expected {expected}")
        if enc.vae is not None and rec["latents"].shape[0] != 2 * expected:
            raise ExtractError(f"{split} record {i}: latents {rec['latents'].shape}, expected {2 * expected} frames")
        empty += expected == 0
    return {"records": n, "empty": empty}


def _write_meta(directory: str, update: dict) -> dict:
    meta = read_meta(directory, missing_ok=True)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(meta.get(k), dict):
            meta[k] = {**meta[k], **v}
        else:
            meta[k] = v
    tmp = os.path.join(directory, META + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, os.path.join(directory, META))
    return meta


def extract(tokenizer_workdir: str, *, flow_vae_workdir: str | None = None, name: str | None = None,
            data_dir: str | None = None, splits=("train", "validation", "test_unseen"), tag: str = "default",
            batch_size: int = 16, shard_size: int = 256, latent_dtype: str = "float16",
            replace_stale: bool = False) -> dict:
    """Writes tokens (and latents) for every utterance of `splits`; returns the metadata written.

    Features already extracted by other models (another workdir, or the same one retrained) are an error,
    or with `replace_stale` are deleted and extracted again."""
    from speech_jax.sharding import maybe_initialize_distributed
    maybe_initialize_distributed()
    enc = _Encoders(tokenizer_workdir, flow_vae_workdir)
    name = name or enc.tok_config.data.name
    data_dir = data_dir or enc.tok_config.data.data_dir
    directory = extracted_dir(name, data_dir, tag)
    os.makedirs(directory, exist_ok=True)
    identity = {"corpus": name, "tokenizer": os.path.abspath(tokenizer_workdir),
                "flow_vae": os.path.abspath(flow_vae_workdir) if flow_vae_workdir else None,
                "codebook_size": int(enc.tok_config.model.codebook_size),
                "latent_dim": int(enc.vae.latent_dim) if enc.vae is not None else 0,
                "latent_dtype": latent_dtype, "sample_rate": enc.sample_rate, "hop_length": enc.hop,
                **enc.fingerprints}
    old = read_meta(directory, missing_ok=True)
    stale = {k: (old.get(k), v) for k, v in identity.items() if k in old and old[k] != v}
    if stale and not replace_stale:  # every process read the same metadata: all raise
        raise ExtractError(f"{directory} holds features from different models ({stale}); "
                           f"use another --tag or remove that directory")
    lead = jax.process_index() == 0
    if stale and lead:
        logging.warning("extract: %s holds features from different models (%s); extracting again", directory, stale)
        shutil.rmtree(directory)
        os.makedirs(directory)
    if lead:
        _write_meta(directory, identity)
    _barrier("extract: metadata")
    meta = read_meta(directory, missing_ok=True)
    for split in splits:
        if meta.get("complete", {}).get(split):
            logging.info("extract %s: already complete", split)
            continue
        source = open_source(name, data_dir, split)
        n = _extract_split(enc, source, directory, split, batch_size=batch_size, shard_size=shard_size,
                           latent_dtype=np.dtype(latent_dtype))
        _barrier(f"extract: {split} written")
        failed = None
        if lead:
            try:
                counts = _verify(enc, source, directory, split, n)
                _write_meta(directory, {"complete": {split: True}, "counts": {split: counts}})
            except ExtractError as e:  # raised after the barrier, so that no process waits there forever
                failed = e
        _barrier(f"extract: {split} verified")
        if failed is not None:
            raise failed
        meta = read_meta(directory, missing_ok=True)
        if not meta.get("complete", {}).get(split):
            raise ExtractError(f"{split}: process 0 did not verify the extracted records (see its log)")
    return {"directory": directory, **meta}


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
