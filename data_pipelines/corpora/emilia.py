"""Emilia in its WebDataset form: tar shards of `<key>.mp3` + `<key>.json` (id, text, speaker, language,
duration, dnsmos). No splits of its own: speaker-disjoint test_unseen and held-out validation.

Listing reads each shard's JSON members once and remembers where each mp3 lies inside its tar, so
decoding later reads just those bytes; the metadata's duration and DNSMOS are filtered before decoding.
With Beam the shards are read by the workers, not the driver (base.CorpusBuilder.list_sources)."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.corpora.base import CorpusBuilder
from data_pipelines.corpora.process import Utterance


def read_shard(shard: str) -> list[Utterance]:
    """Every key of the shard; one without its json (no text) or its mp3 (no such file) is still listed,
    so the report names it."""
    audio, meta = {}, {}
    with epath.Path(shard).open("rb") as f, tarfile.open(fileobj=f) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.rpartition(".")
            if ext == "mp3":
                audio[key] = (member.offset_data, member.size)
            elif ext == "json":
                meta[key] = tar.extractfile(member).read()
    utts = []
    for key in sorted(audio.keys() | meta.keys()):
        try:
            record = json.loads(meta[key]) if key in meta else {}
        except ValueError:
            record = {}
        utt_id = str(record.get("id") or key.rsplit("/", 1)[-1])
        speaker = str(record.get("speaker") or utt_id.rsplit("_", 1)[0])
        quality = record.get("dnsmos")
        utts.append(Utterance(
            utt_id, speaker, record.get("text"), f"{shard}:{key}.mp3", str(record.get("language") or "und"),
            duration=record.get("duration"),
            extras=(("dnsmos", np.float32(np.nan if quality is None else quality)),),
            byte_range=audio.get(key, ())))
    return utts


class Emilia(CorpusBuilder):
    """Emilia (He et al. 2024): in-the-wild multilingual speech (en, zh, de, fr, ja, ko), 24 kHz mp3."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """Emilia's WebDataset shards (e.g. the Hugging Face amphion/Emilia-Dataset
tree), found anywhere below <manual_dir>:
  <manual_dir>/EN/EN-B000000.tar  holding  EN_B00000_S00000_W000000.mp3 + EN_B00000_S00000_W000000.json
  json: {"id", "text", "speaker", "language", "duration", "dnsmos"}
Keep only DNSMOS >= Q with --min-quality Q."""
    HOMEPAGE = "https://emilia-dataset.github.io/Emilia-Demo-Page/"
    EXTRA_FEATURES = {"dnsmos": tfds.features.Scalar(dtype=np.float32, doc="DNSMOS P.835 OVRL; NaN: none")}

    SOURCE_READER = staticmethod(read_shard)  # with Beam, each worker reads shards: the driver only lists them

    def list_sources(self, root):
        # epath refuses '**' globs (thousands of requests on a bucket); a walk lists each folder once.
        return sorted(str(folder / f) for folder, _, files in root.walk() for f in files if f.endswith(".tar"))

    def list_utterances(self, root):
        return [u for shard in self.list_sources(root) for u in read_shard(shard)]
