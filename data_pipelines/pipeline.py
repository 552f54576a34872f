"""The Grain input pipeline shared by every stage.

record index ─shuffle/repeat─▶ plan (from the record index: usable for the stage? length after cropping)
─▶ drop unusable ─▶ global batch (length-grouped within a window) ─▶ this host's rows loaded (decode, resample,
crop, text ids and, for stages that need one, a same-speaker *different-utterance* reference) and padded to the
global batch's static length bucket ─▶ optional multiprocess prefetch.

Every random choice comes from Grain's per-element generator (seed + position), so the stream is a
pure function of (seed, position) and the iterator state in a checkpoint replays it exactly.

One global batch: every host runs the same global stream (the same shuffle, filter and length grouping) and
keeps only its rows, so all hosts agree on each step's bucket and on who holds which example, whatever the
number of processes; the iterator state is the same on every host, so a run may resume on another process
count. Planning needs no audio (the record index holds each record's length and text), so each host reads
and decodes only its own rows.
"""
from __future__ import annotations

import logging
import math
import os

import grain
import jax
import numpy as np

from data_pipelines.grouping import LengthGroupedBatches
from data_pipelines.record_index import Categories, RecordIndex
from data_pipelines.sources import corpus_dir, open_source, split_index


def bucket_lengths(seconds, sample_rate: int, multiple: int) -> tuple[int, ...]:
    """Bucket sizes in samples, rounded up to `multiple` (2 × hop, so token frames are whole)."""
    out = sorted({int(math.ceil(s * sample_rate / multiple) * multiple) for s in seconds})
    if not out:
        raise ValueError("data.buckets_seconds is empty")
    return tuple(out)


def default_bpe_path(cfg) -> str:
    return cfg.bpe_model or os.path.join(corpus_dir(cfg.name, cfg.data_dir), "bpe.model")


class LoadExample:
    """Two steps per record: `plan` (index → whether it is usable and its length, from the record index
    without reading audio; every host plans the whole global batch) and `__call__` (a plan → the example's
    arrays; each host loads only its own rows). Both draw from the plan's seed, so any host loads any row the
    same way."""

    def __init__(self, source, index: RecordIndex, cfg, bpe_path: str, *, training: bool,
                 ref_source=None, ref_index: RecordIndex | None = None, frame_multiple: int = 1,
                 extracted=None, ref_extracted=None, own_split_references: bool = True):
        self.source, self.index = source, index
        # Tokens (25 Hz) and latents (50 Hz) of each record, when the stage trains on extracted features.
        self.extracted, self.ref_extracted = extracted, ref_extracted
        self.frame_multiple = frame_multiple  # samples per token (2 · hop)
        self.speakers = index["speaker"]
        self.by_speaker = self.speakers.groups()  # each speaker's records
        # Optionally a second split to draw references from (validation has one utterance per seen
        # speaker; its references come from that speaker's training utterances).
        self.ref_source, self.ref_index = ref_source, ref_index
        self.own_split_references = own_split_references  # False: references from ref_source only
        self.ref_by_speaker = ref_index["speaker"].groups() if ref_index is not None else {}
        self.speaker_ids = {s: k for k, s in enumerate(sorted(self.by_speaker))}
        self.cfg = cfg
        # Read once: ConfigDict.get of an absent field builds a did-you-mean message, a tenth of a batch's load.
        self.text_units = cfg.get("text_units", "bpe")  # .get: configs saved before these fields
        self.with_description = cfg.get("with_description", False)
        # Training batches of stages that read only the target's tokens and latents skip decoding its audio.
        self.target_audio = cfg.get("target_audio", True) or not training
        self.bpe_path = bpe_path
        self.training = training
        self._bpe = None
        self._phonemes = None
        sr = cfg.sample_rate
        self.max_len = int(cfg.max_seconds * sr)
        self.min_len = int(cfg.min_seconds * sr)
        self.ref_min, self.ref_max = (int(s * sr) for s in cfg.ref_seconds)
        self.prompt_max_tokens = prompt_max_tokens(cfg, frame_multiple)

    def __getstate__(self):  # the tokenizer is reloaded in each worker process
        d = dict(self.__dict__)
        d["_bpe"] = None
        return d

    def _text_ids(self, text: str, language: str) -> list[int]:
        """The transcript as label ids: BPE pieces, or espeak phonemes when `data.text_units` says so
        (`data.phonemes` is their symbol inventory, `data.phoneme_marks` keeps stress and word spaces)."""
        if self.text_units != "phonemes":
            return self.bpe.encode(text)
        if self._phonemes is None:
            from speech_jax.text import units
            self._phonemes = units.from_config(self.cfg)
        return self._phonemes.encode(text, language)

    def _usable_text_ids(self, index: RecordIndex, i: int) -> list[int] | None:
        """Record i's text ids, or None when its text is empty, unusable or longer than data.max_text_len."""
        try:
            ids = self._text_ids(index["text"][i], index["language"][i])
        except ValueError:
            return None
        return ids if ids and len(ids) <= self.cfg.max_text_len else None

    @property
    def bpe(self):
        if self._bpe is None:
            from speech_jax.text.bpe import BpeTokenizer
            self._bpe = BpeTokenizer.load(self.bpe_path)
        return self._bpe

    def _audio(self, record) -> np.ndarray:
        from speech_jax.audio.io import resample, to_float32
        audio = to_float32(np.asarray(record["audio"]))
        sr = int(record["sample_rate"])
        return resample(audio, sr, self.cfg.sample_rate) if sr != self.cfg.sample_rate else audio

    def _crop_start(self, n: int, length: int, rng: np.random.Generator, multiple: int = 1) -> int:
        if n <= length or not self.training:
            return 0
        return int(rng.integers(0, (n - length) // multiple + 1)) * multiple

    def _crop(self, audio: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
        start = self._crop_start(len(audio), length, rng)
        return audio[start:start + length]

    def _features(self, example: dict, index: int, start: int) -> None:
        """Adds the record's tokens (and latents), cut to the same span as its (possibly cropped) audio."""
        rec = self.extracted[index]
        t0, n_tok = start // self.frame_multiple, len(example["audio"]) // self.frame_multiple
        example["tokens"] = np.asarray(rec["tokens"][t0:t0 + n_tok], np.int32)
        if self.cfg.with_latents:
            if "latents" not in rec:
                raise ValueError("data.with_latents is set but the extracted features hold no latents; "
                                 "run `speech-jax extract` with --flow-vae")
            example["latents"] = np.asarray(rec["latents"][2 * t0:2 * (t0 + n_tok)], np.float32)

    def _prompt(self, example: dict, text_ids: list[int] | None, features) -> None:
        """One-shot prompt = the reference utterance whole: its transcript ids and its audio tokens.

        Empty (length 0) when it does not fit the static prompt lengths; the example then trains zero-shot."""
        tokens = np.asarray(features["tokens"], np.int32)
        ids = text_ids or []
        if not ids or not 0 < len(tokens) <= self.prompt_max_tokens:
            ids, tokens = [], tokens[:0]
        example.update(prompt_text_ids=np.asarray(ids, np.int32), prompt_tokens=tokens)

    def _description(self, speaker: str, index: int, rng: np.random.Generator) -> np.ndarray:
        """Word ids of a description of the speaker's voice (text-to-voice): a random wording of some of
        their attributes in training, every attribute in one wording fixed by the record in evaluation."""
        from speech_jax.text import voice_description
        attrs = voice_description.speaker_attributes(speaker)
        text = (voice_description.describe(attrs, rng) if self.training
                else voice_description.describe(attrs, np.random.default_rng(index), keep=1.0))
        ids, _ = voice_description.encode(text, self.cfg.max_description_len)
        return ids

    def _references(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The records of this split and of the reference split that may be record `index`'s reference:
        never the target itself; another corpus's rendering of this very utterance is not a different one."""
        speaker = self.speakers[index]
        others = self.ref_by_speaker.get(speaker, np.zeros(0, np.int64))
        if self.own_split_references:
            own = self.by_speaker[speaker]
            return own[own != index], others
        utt = self.index["utt_id"][index]
        return np.zeros(0, np.int64), np.asarray([i for i in others if self.ref_index["utt_id"][i] != utt],
                                                 np.int64)

    def _has_reference(self, index: int) -> bool:
        speaker = self.speakers[index]
        if self.own_split_references:  # without listing them: a speaker may have thousands of utterances
            return len(self.by_speaker[speaker]) > 1 or speaker in self.ref_by_speaker
        return len(self._references(index)[1]) > 0

    def plan(self, index: int, rng: np.random.Generator) -> dict | None:
        """Record `index`'s place in a global batch: None when it is unusable for this stage, else its
        length once loaded (which picks the batch's bucket and length group), its text ids and the seed it
        loads with."""
        from speech_jax.audio.io import resampled_length
        index = int(index)
        n = resampled_length(int(self.index["samples"][index]), int(self.index["sample_rate"][index]),
                             self.cfg.sample_rate)
        if n < self.min_len or (n > self.max_len and self.cfg.long_utterances == "drop"):
            return None  # too short; or too long for a stage that aligns text with audio and cannot crop
        ids = self._usable_text_ids(self.index, index)
        if ids is None:
            return None
        if self.cfg.with_reference and not self._has_reference(index):
            return None  # no different utterance of this speaker: unusable for joint training
        return {"index": index, "length": min(n, self.max_len), "seed": int(rng.integers(2**63 - 1)),
                "text_ids": np.asarray(ids, np.int32)}

    def __call__(self, plan: dict) -> dict:
        index = plan["index"]
        rng = np.random.default_rng(plan["seed"])
        if self.target_audio:
            record = self.source[index]
            if len(record["audio"]) != self.index["samples"][index]:
                raise ValueError(f"record {index} holds {len(record['audio'])} samples where its index says "
                                 f"{self.index['samples'][index]}: delete the stale records.<split> directory in "
                                 "the corpus directory")
            audio = self._audio(record)
            n = len(audio)
        else:
            from speech_jax.audio.io import resampled_length
            n = resampled_length(int(self.index["samples"][index]), int(self.index["sample_rate"][index]),
                                 self.cfg.sample_rate)
        # Crops start on token boundaries, so extracted tokens and latents stay aligned.
        start = self._crop_start(n, self.max_len, rng, self.frame_multiple)
        # Without the target's audio, silence of the crop's length keeps the batch's fields and shapes.
        audio = audio[start:start + self.max_len] if self.target_audio else np.zeros(min(n - start, self.max_len),
                                                                                      np.float32)
        speaker = self.speakers[index]
        example = {"audio": audio, "text_ids": plan["text_ids"], "index": index,
                   "speaker_id": self.speaker_ids[speaker]}
        if self.extracted is not None:
            self._features(example, index, start)
        if self.with_description:
            example["description_ids"] = self._description(speaker, index, rng)
        if not self.cfg.with_reference:
            return example
        own_split, other_split = self._references(index)
        k = int(rng.integers(len(own_split) + len(other_split)))
        own = k < len(own_split)
        ref_index = int(own_split[k] if own else other_split[k - len(own_split)])
        ref = self._audio((self.source if own else self.ref_source)[ref_index])
        if self.cfg.with_prompt:
            ids = self._usable_text_ids(self.index if own else self.ref_index, ref_index)
            self._prompt(example, ids, (self.extracted if own else self.ref_extracted)[ref_index])
        # ref_index < 0 marks a reference taken from the other split: -(index + 1) there.
        ref_index = ref_index if own else -(ref_index + 1)
        ref_len = int(rng.integers(self.ref_min, self.ref_max + 1)) if self.training else self.ref_max
        example.update(ref_audio=self._crop(ref, ref_len, rng), ref_index=ref_index)
        return example


class PadBatch:
    """Pads a list of examples to static shapes: audio to the smallest bucket that fits.

    `ref_len` None: the examples carry no reference utterance.
    """

    def __init__(self, buckets: tuple[int, ...], ref_len: int | None, max_text_len: int, *,
                 frame_multiple: int = 1, prompt_tokens: int = 0, max_description_len: int = 0):
        self.buckets = buckets
        self.ref_len = ref_len
        self.max_text_len = max_text_len
        self.frame_multiple = frame_multiple  # samples per token: tokens pad to bucket / frame_multiple
        self.prompt_tokens = prompt_tokens
        self.max_description_len = max_description_len

    @staticmethod
    def _pad(arrays, length, dtype):
        out = np.zeros((len(arrays), length), dtype)
        for i, a in enumerate(arrays):
            out[i, :len(a)] = a[:length]
        return out

    def bucket(self, longest: int) -> int:
        return next((b for b in self.buckets if b >= longest), self.buckets[-1])

    def __call__(self, examples, bucket: int | None = None):
        bucket = bucket or self.bucket(max(len(e["audio"]) for e in examples))
        col = lambda k: [e[k] for e in examples]  # noqa: E731
        batch = {
            "audio": self._pad(col("audio"), bucket, np.float32),
            "audio_len": np.asarray([min(len(a), bucket) for a in col("audio")], np.int32),
            "text_ids": self._pad(col("text_ids"), self.max_text_len, np.int32),
            "text_len": np.asarray([len(t) for t in col("text_ids")], np.int32),
            "index": np.asarray(col("index"), np.int64),
            "speaker_id": np.asarray(col("speaker_id"), np.int32),
        }
        if self.ref_len is not None:
            batch["ref_audio"] = self._pad(col("ref_audio"), self.ref_len, np.float32)
            batch["ref_len"] = np.asarray([min(len(a), self.ref_len) for a in col("ref_audio")], np.int32)
            batch["ref_index"] = np.asarray(col("ref_index"), np.int64)
        first = examples[0]
        if "tokens" in first:
            n_tok = bucket // self.frame_multiple
            batch["tokens"] = self._pad(col("tokens"), n_tok, np.int32)
            batch["tokens_len"] = np.asarray([len(t) for t in col("tokens")], np.int32)
        if "latents" in first:
            lat = col("latents")
            out = np.zeros((len(lat), 2 * (bucket // self.frame_multiple), lat[0].shape[-1]), np.float32)
            for i, a in enumerate(lat):
                out[i, :len(a)] = a[:out.shape[1]]
            batch["latents"] = out
        if "prompt_tokens" in first:
            batch["prompt_text_ids"] = self._pad(col("prompt_text_ids"), self.max_text_len, np.int32)
            batch["prompt_text_len"] = np.asarray([len(t) for t in col("prompt_text_ids")], np.int32)
            batch["prompt_tokens"] = self._pad(col("prompt_tokens"), self.prompt_tokens, np.int32)
            batch["prompt_tokens_len"] = np.asarray([len(t) for t in col("prompt_tokens")], np.int32)
        if "description_ids" in first:
            batch["description_ids"] = self._pad(col("description_ids"), self.max_description_len, np.int32)
            batch["description_len"] = np.asarray([len(t) for t in col("description_ids")], np.int32)
        return batch


class LoadRows:
    """A planned global batch → this host's rows, loaded and padded to the bucket of the global batch's
    longest example, so that every host feeds the same shapes to the step."""

    def __init__(self, load: LoadExample, pad: PadBatch, rows: slice):
        self.load, self.pad, self.rows = load, pad, rows

    def __call__(self, plans: list[dict]) -> dict:
        bucket = self.pad.bucket(max(p["length"] for p in plans))
        return self.pad([self.load(p) for p in plans[self.rows]], bucket)


def planned_length(plan: dict) -> int:
    return plan["length"]


def make_dataset(cfg, *, split: str, training: bool, frame_multiple: int,
                 process_index: int | None = None, process_count: int | None = None,
                 rows: slice | None = None) -> grain.IterDataset:
    """This process's rows of each global batch of `data.batch_size`: `rows`, by default the
    process's contiguous block of batch_size / process_count.

    Every process plans the whole global batch from the record index (so that all agree on its grouping and
    bucket without talking to each other) and reads and loads only its own rows.
    """
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if cfg.batch_size % pc:
        raise ValueError(f"data.batch_size {cfg.batch_size} is not divisible by {pc} processes")
    if rows is None:
        share = cfg.batch_size // pc
        rows = slice(pi * share, (pi + 1) * share)
    source = open_source(cfg.name, cfg.data_dir, split)
    if len(source) == 0:
        raise ValueError(f"split {split!r} of {cfg.name} is empty")
    index = split_index(cfg.name, cfg.data_dir, split, source)
    if cfg.get("text_units", "bpe") == "phonemes":
        from speech_jax.text.units import cache_corpus_readings
        cache_corpus_readings(cfg.name, cfg.data_dir, zip(index["text"], index["language"]))
    bpe_path = default_bpe_path(cfg)
    if not os.path.exists(bpe_path):
        raise FileNotFoundError(f"BPE model {bpe_path} not found; run `speech-jax prepare` or set data.bpe_model")

    ref_source = ref_index = None
    # Another corpus of the same speakers (ids) may hold the references, e.g. neutral speech for a style
    # corpus's utterances: then every reference comes from there, none from this corpus.
    ref_corpus = cfg.get("reference_corpus", "") or cfg.name  # .get: configs saved before the field
    if cfg.with_reference and cfg.reference_split and (cfg.reference_split != split or ref_corpus != cfg.name):
        ref_source = open_source(ref_corpus, cfg.data_dir, cfg.reference_split)
        ref_index = split_index(ref_corpus, cfg.data_dir, cfg.reference_split, ref_source)
    extracted = ref_extracted = None
    if cfg.extracted:
        from data_pipelines.extracted import ExtractedSource, extracted_dir
        directory = extracted_dir(cfg.name, cfg.data_dir, cfg.extracted)
        extracted = ExtractedSource(directory, split)
        if len(extracted) != len(source):
            raise ValueError(f"{directory}: {len(extracted)} extracted records for {len(source)} in {split}; "
                             f"re-run `speech-jax extract`")
        if ref_source is not None:
            ref_extracted = ExtractedSource(extracted_dir(ref_corpus, cfg.data_dir, cfg.extracted),
                                            cfg.reference_split)
    elif cfg.with_latents or cfg.with_prompt:
        raise ValueError("data.with_latents / data.with_prompt need extracted features: set data.extracted "
                         "to the tag `speech-jax extract` wrote (default 'default')")
    load = LoadExample(source, index, cfg, bpe_path, training=training, ref_source=ref_source,
                       ref_index=ref_index, frame_multiple=frame_multiple, extracted=extracted,
                       ref_extracted=ref_extracted, own_split_references=ref_corpus == cfg.name)
    exclude = excluded_speakers(cfg.get("exclude_speakers_of", ()), cfg.data_dir)  # .get: older configs
    records = speaker_records(index["speaker"], cfg.get("speaker", ""), f"{cfg.name}/{split}", exclude)
    _check_some_usable(load, split, cfg, records)
    ds = grain.MapDataset.source(records)
    if training:
        ds = ds.shuffle(seed=cfg.shuffle_seed)
    ds = ds.repeat(None)  # evaluation also repeats so that every batch is full (static shapes)
    ds = ds.random_map(load.plan, seed=cfg.shuffle_seed + (0 if training else 1))
    ds = ds.filter(lambda x: x is not None)
    buckets = bucket_lengths(cfg.buckets_seconds, cfg.sample_rate, frame_multiple)
    if buckets[-1] < int(cfg.max_seconds * cfg.sample_rate):
        raise ValueError(f"the largest bucket ({buckets[-1]} samples) is shorter than data.max_seconds")
    ref_len = (bucket_lengths((cfg.ref_seconds[1],), cfg.sample_rate, frame_multiple)[0]
               if cfg.with_reference else None)
    pad = PadBatch(buckets, ref_len, cfg.max_text_len, frame_multiple=frame_multiple,
                   prompt_tokens=prompt_max_tokens(cfg, frame_multiple),
                   max_description_len=cfg.get("max_description_len", 0))
    batch_fn = LoadRows(load, pad, rows)
    # Planning reads only the record index: reader threads would only contend for the GIL (and
    # poll their futures) with the loading of rows, which is where a batch's time goes.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0))
    if cfg.group_window > 1:
        it = LengthGroupedBatches(ds, cfg.batch_size, cfg.group_window, batch_fn,
                                  seed=cfg.shuffle_seed, length_fn=planned_length)
    else:
        it = ds.batch(cfg.batch_size, drop_remainder=True, batch_fn=batch_fn)
    if cfg.num_workers > 0:
        from absl import flags
        if not flags.FLAGS.is_parsed():  # Grain's workers read absl flags; we are not an absl app
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers,
                                                         per_worker_buffer_size=cfg.prefetch))
    logging.info("data %s/%s: %d records, %d speakers, buckets %s samples", cfg.name, split, len(source),
                 len(load.speaker_ids), buckets)
    return it


def excluded_speakers(names, data_dir: str) -> set[str]:
    """The speakers of every "corpus:split" in `names` (`data.exclude_speakers_of`)."""
    out = set()
    for name in names:
        corpus, _, split = name.rpartition(":")
        if not corpus or not split:
            raise ValueError(f"data.exclude_speakers_of takes 'corpus:split' names, e.g. "
                             f"'espeak_tts/small:test_unseen', got {name!r}")
        out |= set(split_index(corpus, data_dir, split)["speaker"].names)
    return out


def speaker_records(speakers: Categories, speaker: str, where: str,
                    exclude: set[str] = frozenset()) -> np.ndarray:
    """The record indices a split contributes: all, or (`data.speaker`) one speaker's only, e.g. the few
    minutes of a voice that professional voice cloning fits; never those of an `exclude`d speaker."""
    if not speaker:
        records = np.flatnonzero(~speakers.isin(exclude))
        if not len(records):
            raise ValueError(f"every speaker of {where} is excluded (data.exclude_speakers_of)")
        return records
    records = np.flatnonzero(speakers.isin({speaker} - set(exclude)))
    if not len(records):
        known = sorted(set(speakers.names) - set(exclude))
        raise ValueError(f"data.speaker={speaker!r} has no utterances in {where}; its {len(known)} speakers "
                         f"include {', '.join(known[:8])}")
    return records


def _check_some_usable(load: LoadExample, split: str, cfg, records, probe: int = 64) -> None:
    """Fails fast instead of filtering forever when the length/text rules reject everything."""
    rng = np.random.default_rng(0)
    n = len(records)
    step = max(n // probe, 1)
    if any(load.plan(records[i], rng) is not None for i in range(0, n, step)):
        return
    raise ValueError(
        f"no usable example among {min(n, probe)} probed records of {cfg.name}/{split}"
        f"{' of speaker ' + repr(cfg.speaker) if cfg.get('speaker') else ''}: check "
        f"data.min_seconds={cfg.min_seconds}, max_seconds={cfg.max_seconds}, "
        f"long_utterances={cfg.long_utterances!r}, max_text_len={cfg.max_text_len}, and that speakers "
        f"have a second utterance (data.reference_split={cfg.reference_split!r})")


# The fields that go to the accelerator, with their ranks (record indices stay on the host).
DEVICE_FIELDS = {"audio": 2, "audio_len": 1, "text_ids": 2, "text_len": 1, "speaker_id": 1}
REFERENCE_FIELDS = {"ref_audio": 2, "ref_len": 1}
TOKEN_FIELDS = {"tokens": 2, "tokens_len": 1}
LATENT_FIELDS = {"latents": 3}
PROMPT_FIELDS = {"prompt_text_ids": 2, "prompt_text_len": 1, "prompt_tokens": 2, "prompt_tokens_len": 1}
DESCRIPTION_FIELDS = {"description_ids": 2, "description_len": 1}


def prompt_max_tokens(cfg, frame_multiple: int) -> int:
    """Static length of the one-shot prompt's token segment."""
    return int(math.ceil(cfg.prompt_max_seconds * cfg.sample_rate / frame_multiple)) if cfg.with_prompt else 0


def device_fields(cfg) -> dict[str, int]:
    fields = dict(DEVICE_FIELDS)
    for on, extra in ((cfg.with_reference, REFERENCE_FIELDS), (bool(cfg.extracted), TOKEN_FIELDS),
                      (cfg.with_latents, LATENT_FIELDS), (cfg.with_prompt, PROMPT_FIELDS),
                      (cfg.get("with_description", False), DESCRIPTION_FIELDS)):
        if on:
            fields.update(extra)
    return fields


def device_batch(batch: dict, fields) -> dict:
    return {k: batch[k] for k in fields}
