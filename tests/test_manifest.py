"""User manifests: a good one builds; each kind of bad row is named (stop) or skipped and
reported (skip)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines.prepare import prepare, summary

RATE = 22050


def _tone(seconds=0.6, freq=220.0, channels=1):
    t = np.arange(int(seconds * RATE)) / RATE
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _good_rows(folder):
    rows = []
    for i, speaker in enumerate(["alice", "alice", "bob", "bob"]):
        name = f"good{i}.wav"
        sf.write(folder / name, _tone(freq=200.0 + 40 * i), RATE, subtype="PCM_16")
        rows.append({"wav_path": name, "text": f"Sentence number {i}.", "speaker": speaker,
                     "language": "en", "split": "validation" if i == 3 else "train"})
    sf.write(folder / "stereo.wav", _tone(channels=2), RATE, subtype="PCM_16")
    rows.append({"wav_path": str(folder / "stereo.wav"), "text": "Absolute path, two channels.",
                 "speaker": "carol", "language": "en", "split": "train"})
    return rows


def _bad_file(folder, kind):
    """(row, reason fragment) for one kind of unusable row."""
    path = folder / f"{kind}.wav"
    text = f"This is the {kind} one."
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "nan":
        audio = _tone()
        audio[100:110] = np.nan
        sf.write(path, audio, RATE, subtype="FLOAT")
    elif kind == "silent":
        sf.write(path, np.zeros(RATE, np.float32), RATE, subtype="PCM_16")
    elif kind == "too_short":  # 10 samples: 0.45 ms
        sf.write(path, _tone()[:10], RATE, subtype="PCM_16")
    elif kind == "empty_text":
        sf.write(path, _tone(), RATE, subtype="PCM_16")
        text = "   "
    reason = {"corrupt": "corrupt", "empty": "empty", "nan": "non-finite", "silent": "silent",
              "too_short": "too short", "empty_text": "empty text"}[kind]
    return {"wav_path": path.name, "text": text, "speaker": "dave", "language": "en"}, reason


BAD_KINDS = ("corrupt", "empty", "nan", "silent", "too_short", "empty_text")


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["wav_path", "text", "speaker", "language", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def _read(result, split):
    import tensorflow_datasets as tfds

    source = tfds.data_source(result["name"], data_dir=result["data_dir"], split=split,
                              download=False)
    return [source[i] for i in range(len(source))]


def test_good_manifest_builds_the_corpus_schema(tmp_path):
    rows = _good_rows(tmp_path)
    manifest = tmp_path / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = prepare("manifest", str(tmp_path / "data"), manifest=str(manifest), vocab_size=300)
    assert result["splits"] == {"train": 4, "validation": 1} and result["report"] is None
    assert os.path.exists(result["bpe_model"])
    train = _read(result, "train")
    assert {e["speaker"].decode() for e in train} == {"alice", "bob", "carol"}
    for e in train:
        assert e["audio"].dtype == np.int16 and int(e["sample_rate"]) == 16000
        assert abs(e["audio"].size - 0.6 * 16000) <= 2  # resampled from 22.05 kHz, not trimmed
        assert e["language"] == b"en"
    # Same manifest again: the same corpus, reused.
    assert prepare("manifest", str(tmp_path / "data"), manifest=str(manifest),
                   vocab_size=300) == result


def test_skip_mode_skips_and_reports_every_bad_row(tmp_path):
    rows = _good_rows(tmp_path)
    reasons = {}
    for kind in BAD_KINDS:
        row, reasons[kind] = _bad_file(tmp_path, kind)
        rows.append(row)
    manifest = _write_csv(tmp_path / "mixed.csv", rows)
    result = prepare("manifest", str(tmp_path / "data"), manifest=manifest, on_error="skip",
                     vocab_size=300)
    assert result["splits"] == {"train": 4, "validation": 1}
    with open(result["report"]) as f:
        report = {os.path.basename(r["wav_path"]): r for r in map(json.loads, f)}
    assert set(report) == {f"{kind}.wav" for kind in BAD_KINDS}
    for kind in BAD_KINDS:
        assert reasons[kind] in report[f"{kind}.wav"]["reason"], report[f"{kind}.wav"]
    kept = {e["utt_id"].decode() for s in ("train", "validation") for e in _read(result, s)}
    assert not kept & {kind for kind in BAD_KINDS}
    # The bad rows have no split column: they count against train.
    assert result["skipped"] == {"train": len(BAD_KINDS)}
    printed = summary(result)
    assert f"skipped {len(BAD_KINDS)} of {4 + len(BAD_KINDS)} rows (train {len(BAD_KINDS)})" in printed
    assert result["report"] in printed


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_stop_mode_names_the_bad_file(tmp_path, kind):
    row, reason = _bad_file(tmp_path, kind)
    manifest = _write_csv(tmp_path / "one_bad.csv", _good_rows(tmp_path)[:2] + [row])
    with pytest.raises(ValueError) as info:
        prepare("manifest", str(tmp_path / "data"), manifest=manifest, on_error="stop")
    message = str(info.value)
    assert f"{kind}.wav" in message and reason in message, message


def test_stereo_is_a_bad_file_when_only_mono_is_allowed(tmp_path):
    from data_pipelines.manifest import BadFileError, Manifest, make_config

    manifest = _write_csv(tmp_path / "m.csv", _good_rows(tmp_path))
    config = make_config(manifest, on_error="stop", max_channels=1)
    with pytest.raises(BadFileError, match="stereo.wav.*2 channels"):
        Manifest(config=config, data_dir=str(tmp_path / "data")).download_and_prepare()


def test_manifest_without_required_column_is_rejected(tmp_path):
    from data_pipelines.manifest import ManifestError

    path = tmp_path / "bad.csv"
    path.write_text("wav_path,speaker\na.wav,x\n")
    with pytest.raises(ManifestError, match="missing column.*text"):
        prepare("manifest", str(tmp_path / "data"), manifest=str(path))
