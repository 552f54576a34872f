"""TFDS builder `manifest`: a user's CSV/JSONL of (wav_path, text, speaker[, language, split])
turned into the corpus schema shared with `espeak_tts`.

Bad rows (unreadable, empty, too short, NaN/inf, silent or many-channel audio; empty text) either stop
the build with BadFileError naming the file (`on_error="stop"`), or are skipped, listed in
`skipped.jsonl` beside the data and summarised in the log (`on_error="skip"`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.espeak_tts import schema
from data_pipelines.espeak_tts.tfds_compat import LocalCodePath
from data_pipelines.manifest import rows as rows_lib
from data_pipelines.manifest.validate import BadFileError, load_row
from speech_jax.audio import io as audio_io

REPORT_NAME = "skipped.jsonl"
# Shorter clips hold no word and only add padding; espeak's shortest sentence is ~0.6 s.
DEFAULT_MIN_SECONDS = 0.25
ON_ERROR = ("skip", "stop")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class ManifestConfig(tfds.core.BuilderConfig):
    manifest_path: str = ""
    on_error: str = "skip"
    sample_rate: int = 16000
    max_channels: int = 2  # 2: stereo is averaged to mono; 1: stereo is a bad file
    min_peak: float = audio_io.DEFAULT_MIN_PEAK
    min_seconds: float = DEFAULT_MIN_SECONDS


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_config(manifest_path: str | os.PathLike, name: str | None = None, *,
                on_error: str = "skip", sample_rate: int = 16000, max_channels: int = 2,
                min_peak: float = audio_io.DEFAULT_MIN_PEAK,
                min_seconds: float = DEFAULT_MIN_SECONDS) -> ManifestConfig:
    """A config for one manifest. The default name, '<file stem>_<hash>', changes whenever the
    manifest or the audio options change, so a stale build is never reused."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    path = os.path.abspath(os.fspath(manifest_path))
    if not os.path.isfile(path):
        raise rows_lib.ManifestError(f"manifest {path} does not exist")
    if not min_seconds >= 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds!r}")
    if name is None:
        options = f"{_file_digest(path)}/{sample_rate}/{max_channels}/{min_peak}/{min_seconds}"
        stem = re.sub(r"[^a-z0-9_]+", "_", os.path.splitext(os.path.basename(path))[0].lower())
        name = f"{stem.strip('_') or 'manifest'}_{hashlib.sha256(options.encode()).hexdigest()[:8]}"
    return ManifestConfig(name=name, manifest_path=path, on_error=on_error,
                          sample_rate=sample_rate, max_channels=max_channels, min_peak=min_peak,
                          min_seconds=min_seconds, description=f"built from {path} at {sample_rate} Hz")


class Manifest(LocalCodePath, tfds.core.GeneratorBasedBuilder):
    """Speech listed in a user's manifest. Build with `config=make_config(path)`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    # No predefined configs: each manifest gets its own (see make_config). Reading a built one
    # by name, e.g. tfds.data_source('manifest/<name>'), loads it from its files.
    BUILDER_CONFIGS = []

    def __init__(self, *, file_format: str | None = schema.FILE_FORMAT, **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=schema.features(), supervised_keys=None)

    def _split_generators(self, dl_manager):
        del dl_manager  # the audio is local
        config = self.builder_config
        if not isinstance(config, ManifestConfig) or not config.manifest_path:
            raise rows_lib.ManifestError(
                "the manifest builder needs config=data_pipelines.manifest.make_config(path)")
        by_split: dict[str, list[rows_lib.Row]] = {}
        for row in rows_lib.read_manifest(config.manifest_path):
            by_split.setdefault(row.split, []).append(row)
        report = epath.Path(self.data_dir) / REPORT_NAME  # the build folder, renamed when done
        report.write_text("")
        return {split: self._generate_examples(split, rows, report)
                for split, rows in by_split.items()}

    def _generate_examples(self, split, rows, report):
        config = self.builder_config
        bad = []
        for row in rows:
            try:
                audio = load_row(row, config.sample_rate, config.max_channels, config.min_peak,
                                 config.min_seconds)
            except BadFileError as e:
                if config.on_error == "stop":
                    raise
                bad.append(e)
                continue
            yield row.utt_id, {
                "audio": audio,
                "sample_rate": config.sample_rate,
                "text": row.text.strip(),
                "speaker": row.speaker,
                "language": row.language,
                "utt_id": row.utt_id,
            }
        if bad:
            with report.open("a") as f:
                for e in bad:
                    f.write(json.dumps({"split": split, "line": e.row.line, "wav_path": e.path,
                                        "utt_id": e.row.utt_id, "reason": e.reason}) + "\n")
            _log.warning("manifest split %r: skipped %d of %d rows (%s); listed in %s", split,
                         len(bad), len(rows), "; ".join(str(e) for e in bad[:3]) +
                         (" ..." if len(bad) > 3 else ""), REPORT_NAME)
        if len(bad) == len(rows):
            raise rows_lib.ManifestError(
                f"every row of split {split!r} in {config.manifest_path} is unusable, e.g. {bad[0]}")
