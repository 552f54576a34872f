"""One utterance from its file to the stored example, or to the filter that left it out. Module-level
functions of (utterance, config) only, so Beam workers run them without the builder."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess

import numpy as np
import soundfile as sf
from etils import epath

from data_pipelines.corpora import filters
from data_pipelines.espeak_tts import schema
from speech_jax.audio import io as audio_io


@dataclasses.dataclass(frozen=True, slots=True)  # slots: the whole listing sits in the driver's memory
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


def read_audio(utt: Utterance) -> tuple[np.ndarray, int]:
    """([frames, channels] float32, sample rate) of `utt`: a file, an archive member, a pipe (Kaldi), or a
    segment of any of them."""
    if utt.byte_range:  # '<archive>:<member>': read the member's bytes straight from the archive
        offset, size = utt.byte_range
        with epath.Path(utt.path.rsplit(":", 1)[0]).open("rb") as f:
            f.seek(offset)
            source = io.BytesIO(f.read(size))
    elif utt.path.endswith("|"):  # Kaldi's extended filename: a command whose stdout is the audio
        out = subprocess.run(utt.path[:-1], shell=True, capture_output=True, check=False)
        if out.returncode:
            raise audio_io.AudioError(f"command failed ({out.stderr.decode(errors='replace')[-200:]})")
        source = io.BytesIO(out.stdout)
    elif "://" in utt.path:  # a bucket (gs://, s3://) for Beam runners on a cluster: read it whole
        path = epath.Path(utt.path)
        if not path.exists():
            raise audio_io.AudioError("no such file")
        source = io.BytesIO(path.read_bytes())
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


def process(utt: Utterance, config) -> dict:
    """{"example", "normalised" (the text changed), "digest" (of the stored audio)}; raises filters.Rejected.
    `config` is a CorpusConfig."""
    language = config.language or utt.language
    text = filters.normalise_text(utt.text, language)
    extras = dict(utt.extras)
    filters.check_quality(extras.get("dnsmos"), config.min_quality)
    if utt.duration is not None:  # cheap: before decoding
        filters.check_duration(utt.duration, config.min_seconds, config.max_seconds)
    try:
        data, sr = read_audio(utt)
        audio = audio_io.check_audio(data, sr, utt.path, min_peak=config.min_peak)
    except audio_io.AudioError as e:
        raise filters.Rejected("silence" if e.reason.startswith("silent") else "unreadable", e.reason) from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        raise filters.Rejected("unreadable", f"unreadable or corrupt audio ({e})") from None
    filters.check_clipping(data, config.max_clipped)
    filters.check_duration(audio.size / sr, config.min_seconds, config.max_seconds)
    if sr != config.sample_rate:
        audio = audio_io.resample(audio, sr, config.sample_rate)
    audio = schema.to_int16(audio)
    example = {"audio": audio, "sample_rate": config.sample_rate, "text": text, "speaker": utt.speaker,
               "language": language, "utt_id": utt.utt_id,
               "duration": np.float32(audio.size / config.sample_rate), **extras}
    return {"example": example, "normalised": text != (utt.text or "").strip(),
            "digest": filters.audio_digest(audio) if config.dedup else ""}


def outcome(item: tuple, config) -> dict:
    """`item` = (rank, split, utterance): what became of it, as a plain dict (Beam pickles it).
    "rejected" is None when kept, else (filter, reason)."""
    rank, split, utt = item
    out = {"rank": rank, "split": split, "utt": utt, "rejected": None}
    try:
        out.update(process(utt, config))
    except filters.Rejected as e:
        out["rejected"] = (e.filter, e.reason)
    return out


def report_line(o: dict) -> dict:
    return {"split": o["split"], "wav_path": o["utt"].path, "utt_id": o["utt"].utt_id,
            "filter": o["rejected"][0], "reason": o["rejected"][1]}


def count_label(o: dict) -> str:
    """What a split's counts tally for this outcome."""
    if o["rejected"]:
        return "rejected:" + o["rejected"][0]
    return "normalised" if o["normalised"] else "kept"


def counts_of(split: str, labels: dict) -> dict:
    """The counts record of a split from {count_label: n}."""
    rejected = {f: labels.get("rejected:" + f, 0) for f in filters.FILTERS}
    kept = labels.get("kept", 0) + labels.get("normalised", 0)
    return {"split": split, "listed": kept + sum(rejected.values()), "kept": kept,
            "text_normalised": labels.get("normalised", 0), "rejected": rejected}


def drop_duplicates(group: list[dict]) -> list[dict]:
    """Outcomes whose stored audio is the same: the first by rank (train before held-out splits, then
    listing order) stays, the others become 'duplicate' rejections naming it."""
    group = sorted(group, key=lambda o: o["rank"])
    for o in group[1:]:
        o["rejected"] = ("duplicate", f"same audio as {group[0]['utt'].utt_id}")
    return group
