"""The builder every public corpus shares. A corpus subclass is only its layout reader: `list_utterances`
walks the published layout under `manual_dir`; this class splits, decodes, filters and writes.

Each utterance is decoded, checked (unreadable, silence, clipping, duration, text, quality, duplicate
audio), resampled and stored as int16 in the schema `espeak_tts` uses, plus `duration` and the corpus's
own extras (process.py). Every file left out is listed beside the data with its path, split, filter and
reason, with the counts of each split (what `speech-jax prepare` prints). With Beam options in the
DownloadConfig the same work runs as a Beam pipeline (beam.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.corpora import process as process_lib, splits as splits_lib
from data_pipelines.corpora.process import Utterance
from data_pipelines.espeak_tts import schema
from data_pipelines.espeak_tts.tfds_compat import LocalCodePath
from speech_jax.audio import io as audio_io

# Beside the data: the files left out (path, split, filter, reason) and the counts of each split. Written
# per split (Beam writes them from its workers); `merge_reports` joins them into REPORT_NAME and COUNTS_NAME.
REPORT_NAME = "skipped.jsonl"  # the manifest builder's name, so `prepare` reads both alike
COUNTS_NAME = "filters.jsonl"
DEFAULT_SAMPLE_RATE = 16000

_log = logging.getLogger(__name__)


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

    # A corpus whose listing is heavy and has no splits of its own may also list by source (Emilia: one tar
    # shard each), so that a Beam pipeline lists in its workers: `list_sources` gives the sources in listing
    # order, SOURCE_READER (a module-level function: Beam pickles it) a source's utterances in order.
    SOURCE_READER = None

    def list_sources(self, root: epath.Path) -> list[str]:
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------------

    def download_and_prepare(self, *, download_config=None, **kwargs):
        # TFDS decides Beam or not from the DownloadConfig; the split generators must know which to return.
        self._use_beam = bool(download_config and (download_config.beam_runner or download_config.beam_options))
        return super().download_and_prepare(download_config=download_config, **kwargs)

    def _split_generators(self, dl_manager):
        root = epath.Path(dl_manager.manual_dir)
        if not root.exists():
            raise FileNotFoundError(f"manual_dir {root} does not exist; it should hold:\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        report_dir = epath.Path(self.data_dir)  # the build folder, renamed when complete
        if getattr(self, "_use_beam", False) and self.SOURCE_READER is not None:
            sources = self.list_sources(root)
            if not sources:
                raise FileNotFoundError(f"no utterances found under {root}; expected:\n"
                                        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
            from data_pipelines.corpora import beam as beam_lib

            spec, names = self.builder_config.split_spec, splits_lib.SPLITS
            listing = beam_lib.listed_items(sources, type(self).SOURCE_READER, spec, names)
            return beam_lib.split_transforms(listing, self.builder_config, report_dir, names)
        utts = self.list_utterances(root)
        if not utts:
            raise FileNotFoundError(f"no utterances found under {root}; expected:\n"
                                    f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        by_split = splits_lib.assign(utts, self.builder_config.split_spec)
        order = ("train", "validation")  # duplicates are dropped from the held-out splits, not from train
        names = sorted(by_split, key=lambda s: (order.index(s) if s in order else len(order), s))
        # rank: the order in which duplicates are resolved, the same in both paths.
        items = [((i, j), s, u) for i, s in enumerate(names) for j, u in enumerate(by_split[s])]
        if getattr(self, "_use_beam", False):
            from data_pipelines.corpora import beam as beam_lib

            transforms = beam_lib.split_transforms(items, self.builder_config, report_dir)
            return {s: transforms[s] for s in names}
        self._seen_audio: dict[str, str] = {}  # digest -> utt_id of its first utterance, across splits
        return {s: self._generate_examples([it for it in items if it[1] == s], report_dir) for s in names}

    def _generate_examples(self, items, report_dir):
        config, rejected, labels = self.builder_config, [], {}
        for item in items:  # in rank order, so the first of a duplicate pair is the one Beam keeps too
            o = process_lib.outcome(item, config)
            if o["rejected"] is None and config.dedup:
                first = self._seen_audio.setdefault(o["digest"], o["utt"].utt_id)
                if first != o["utt"].utt_id:
                    o["rejected"] = ("duplicate", f"same audio as {first}")
            label = process_lib.count_label(o)
            labels[label] = labels.get(label, 0) + 1
            if o["rejected"] is None:
                yield o["utt"].utt_id, o["example"]
            else:
                rejected.append(process_lib.report_line(o))
        split = items[0][1]
        (report_dir / f"skipped-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejected))
        counts = process_lib.counts_of(split, labels)
        (report_dir / f"filters-{split}.json").write_text(json.dumps(counts) + "\n")
        if rejected:
            _log.warning("%s split %r: left out %d of %d utterances (%s); listed in %s", self.name, split,
                         len(rejected), len(items),
                         ", ".join(f"{k} {v}" for k, v in counts["rejected"].items() if v), REPORT_NAME)
        if not counts["kept"]:  # TFDS cannot write an empty split; say why instead of its writer's error
            raise ValueError(f"every utterance of split {split!r} was left out, e.g. {rejected[0]}")


def merge_reports(corpus_dir) -> tuple[str | None, dict]:
    """Joins the per-split reports of a built corpus into REPORT_NAME (sorted by split and path) and
    COUNTS_NAME; returns (the report's path, or None when nothing was left out, {split: counts})."""
    corpus_dir = epath.Path(corpus_dir)
    rejected, counts = [], {}
    for path in sorted(corpus_dir.glob("skipped-*.jsonl")):
        rejected += [json.loads(line) for line in path.read_text().splitlines() if line]
    for path in sorted(corpus_dir.glob("filters-*.json")):
        record = json.loads(path.read_text())
        counts[record.pop("split")] = record
    report = corpus_dir / REPORT_NAME
    report.write_text("".join(json.dumps(r) + "\n" for r in rejected))
    (corpus_dir / COUNTS_NAME).write_text("".join(json.dumps(dict(split=k, **v)) + "\n" for k, v in counts.items()))
    return (str(report) if rejected else None), counts
