"""The builder every public corpus shares. A corpus subclass is only its layout reader: `list_utterances`
walks the published layout under `manual_dir`; this class splits, decodes, filters and writes.

Each utterance is decoded, checked (unreadable, silence, clipping, duration, text, quality, duplicate
audio), resampled and stored as int16 in the schema `espeak_tts` uses, plus `duration` and the corpus's
own extras. Every file left out is listed in `skipped.jsonl` beside the data with its path, split, filter
and reason; `filters.jsonl` holds the counts of each split (what `speech-jax prepare` prints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import subprocess

import numpy as np
import soundfile as sf
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.corpora import filters, splits as splits_lib
from data_pipelines.espeak_tts import schema
from data_pipelines.espeak_tts.tfds_compat import LocalCodePath
from speech_jax.audio import io as audio_io

REPORT_NAME = "skipped.jsonl"  # the manifest builder's name, so `prepare` reads both alike
COUNTS_NAME = "filters.jsonl"
DEFAULT_SAMPLE_RATE = 16000

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance as a layout reader finds it; nothing is decoded yet."""

    utt_id: str
    speaker: str
    text: str | None  # None: the layout has no transcript for this audio (reported, not stored)
    path: str  # the audio file, or for archives '<shard>:<member>'; what reports name
    language: str = "und"
    split: str | None = None  # the corpus's own split; None: splits.assign decides
    start: float = 0.0  # seconds: Kaldi segments cut one recording into utterances
    end: float | None = None
    duration: float | None = None  # from the corpus's metadata: checked before decoding
    extras: tuple = ()  # (feature name, value) pairs of the corpus's EXTRA_FEATURES
    byte_range: tuple = ()  # (offset, size) of the audio inside an archive (Emilia's tar shards)


@dataclasses.dataclass(eq=False)
class CorpusConfig(tfds.core.BuilderConfig):
    sample_rate: int = DEFAULT_SAMPLE_RATE
    min_seconds: float = 0.5
    max_seconds: float = 30.0
    max_clipped: float = 0.001  # fraction of samples at full scale
    min_peak: float = audio_io.DEFAULT_MIN_PEAK  # below: silence
    min_quality: float | None = None  # e.g. Emilia's DNSMOS; None keeps every score
    dedup: bool = True
    language: str = ""  # for layouts that do not say (Kaldi); "" keeps the corpus's own
    split_spec: splits_lib.SplitSpec = dataclasses.field(default_factory=splits_lib.SplitSpec)


_OPTIONS = ("sample_rate", "min_seconds", "max_seconds", "max_clipped", "min_peak", "min_quality", "dedup",
            "language", "split_spec")


def make_config(name: str | None = None, **options) -> CorpusConfig:
    """A config; the default name, '<rate>hz' (plus a hash of the options that differ from the defaults),
    changes whenever a filter changes, so a build with other filters is never reused."""
    unknown = set(options) - set(_OPTIONS)
    if unknown:
        raise ValueError(f"unknown corpus options {sorted(unknown)}; known: {list(_OPTIONS)}")
    options = {k: v for k, v in options.items() if v is not None or k == "min_quality"}
    config = CorpusConfig(name="x", **options)
    if not 0 <= config.min_seconds < config.max_seconds:
        raise ValueError(f"need 0 <= min_seconds < max_seconds, got {config.min_seconds}, {config.max_seconds}")
    if name is None:
        default = CorpusConfig(name="x")
        changed = {k: getattr(config, k) for k in _OPTIONS
                   if k != "sample_rate" and getattr(config, k) != getattr(default, k)}
        name = f"{config.sample_rate}hz"
        if changed:
            name += "_" + hashlib.sha256(repr(sorted(changed.items())).encode()).hexdigest()[:8]
    return dataclasses.replace(config, name=name, description=f"{name}: {options or 'defaults'}")


class CorpusBuilder(LocalCodePath, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the public-corpus builders; subclasses set MANUAL_DOWNLOAD_INSTRUCTIONS (the layout)
    and implement `list_utterances`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = []  # each build gets its config from make_config; built ones are read from their files
    EXTRA_FEATURES: dict = {}  # name -> tfds feature, for what only this corpus has
    HOMEPAGE = ""

    def __init__(self, *, file_format: str | None = schema.FILE_FORMAT, **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = dict(schema.features())
        features["duration"] = tfds.features.Scalar(dtype=np.float32, doc="seconds, as stored")
        features.update(self.EXTRA_FEATURES)
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                              supervised_keys=None, homepage=self.HOMEPAGE)

    # --- what a corpus implements -------------------------------------------------------------

    def list_utterances(self, root: epath.Path) -> list[Utterance]:
        raise NotImplementedError

    def read_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
        """([frames, channels] float32, sample rate) of `utt`: a file, a pipe (Kaldi) or a segment."""
        if utt.byte_range:  # '<archive>:<member>': read the member's bytes straight from the archive
            offset, size = utt.byte_range
            with open(utt.path.rsplit(":", 1)[0], "rb") as f:
                f.seek(offset)
                source = io.BytesIO(f.read(size))
        elif utt.path.endswith("|"):  # Kaldi's extended filename: a command whose stdout is the audio
            out = subprocess.run(utt.path[:-1], shell=True, capture_output=True, check=False)
            if out.returncode:
                raise audio_io.AudioError(f"command failed ({out.stderr.decode(errors='replace')[-200:]})")
            source = io.BytesIO(out.stdout)
        else:
            source = utt.path
            if not os.path.isfile(source):
                raise audio_io.AudioError("no such file")
        with sf.SoundFile(source) as f:
            sr = f.samplerate
            start = int(round(utt.start * sr))
            frames = -1 if utt.end is None else int(round(utt.end * sr)) - start
            if start:
                f.seek(start)
            return f.read(frames, dtype="float32", always_2d=True), sr

    # --- shared machinery ---------------------------------------------------------------------

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir)
        if not root.exists():
            raise FileNotFoundError(f"manual_dir {root} does not exist; it should hold:\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        utts = self.list_utterances(root)
        if not utts:
            raise FileNotFoundError(f"no utterances found under {root}; expected:\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        by_split = splits_lib.assign(utts, self.builder_config.split_spec)
        report_dir = epath.Path(self.data_dir)  # the build folder, renamed when complete
        for name in (REPORT_NAME, COUNTS_NAME):
            (report_dir / name).write_text("")
        self._seen_audio: dict[str, str] = {}  # digest -> first utt_id, across splits (in split order)
        order = ("train", "validation")  # duplicates are dropped from the held-out splits, not from train
        names = sorted(by_split, key=lambda s: (order.index(s) if s in order else len(order), s))
        return {s: self._generate_examples(s, by_split[s], report_dir) for s in names}

    def _example(self, utt: Utterance) -> tuple[dict, bool]:
        """(the stored example, whether normalisation changed the text); raises filters.Rejected."""
        config = self.builder_config
        language = config.language or utt.language
        text = filters.normalise_text(utt.text, language)
        extras = dict(utt.extras)
        filters.check_quality(extras.get("dnsmos"), config.min_quality)
        if utt.duration is not None:  # cheap: before decoding
            filters.check_duration(utt.duration, config.min_seconds, config.max_seconds)
        try:
            data, sr = self.read_audio(utt)
            audio = audio_io.check_audio(data, sr, utt.path, min_peak=config.min_peak)
        except audio_io.AudioError as e:
            kind = "silence" if e.reason.startswith("silent") else "unreadable"
            raise filters.Rejected(kind, e.reason) from None
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
            raise filters.Rejected("unreadable", f"unreadable or corrupt audio ({e})") from None
        filters.check_clipping(data, config.max_clipped)
        filters.check_duration(audio.size / sr, config.min_seconds, config.max_seconds)
        if sr != config.sample_rate:
            audio = audio_io.resample(audio, sr, config.sample_rate)
        audio = schema.to_int16(audio)
        if config.dedup:
            digest = filters.audio_digest(audio)
            first = self._seen_audio.setdefault(digest, utt.utt_id)
            if first != utt.utt_id:
                raise filters.Rejected("duplicate", f"same audio as {first}")
        example = {"audio": audio, "sample_rate": config.sample_rate, "text": text, "speaker": utt.speaker,
                   "language": language, "utt_id": utt.utt_id,
                   "duration": np.float32(audio.size / config.sample_rate)}
        example.update(extras)
        return example, text != (utt.text or "").strip()

    def _generate_examples(self, split, utts, report_dir):
        rejected, normalised, kept = [], 0, 0
        for utt in utts:
            try:
                example, changed = self._example(utt)
            except filters.Rejected as e:
                rejected.append((utt, e))
                continue
            kept += 1
            normalised += changed
            yield utt.utt_id, example
        counts = {f: 0 for f in filters.FILTERS}
        for _, e in rejected:
            counts[e.filter] += 1
        with (report_dir / REPORT_NAME).open("a") as f:
            for utt, e in rejected:
                f.write(json.dumps({"split": split, "wav_path": utt.path, "utt_id": utt.utt_id,
                                    "filter": e.filter, "reason": e.reason}) + "\n")
        with (report_dir / COUNTS_NAME).open("a") as f:
            f.write(json.dumps({"split": split, "listed": len(utts), "kept": kept,
                                "text_normalised": normalised, "rejected": counts}) + "\n")
        if rejected:
            _log.warning("%s split %r: left out %d of %d utterances (%s); listed in %s", self.name, split,
                         len(rejected), len(utts), ", ".join(f"{k} {v}" for k, v in counts.items() if v),
                         REPORT_NAME)
        if not kept:  # TFDS cannot write an empty split; say why instead of its writer's error
            raise ValueError(f"every utterance of split {split!r} was left out, e.g. {rejected[0][0].path}: "
                             f"{rejected[0][1]}; see {report_dir / REPORT_NAME}")
