"""Public corpora from miniature copies of their published layouts: splits, speakers, texts, audio round
trip, every bad file reported with its path and filter, and the training pipeline reading them by name."""
from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
import soundfile as sf

from data_pipelines.corpora import miniature
from data_pipelines.corpora import splits as splits_lib
from data_pipelines.corpora.filters import normalise_text
from data_pipelines.espeak_tts import schema
from data_pipelines.prepare import prepare, summary
from speech_jax.audio.io import resample

# Emilia is built with a DNSMOS threshold; Kaldi through the command line.
OPTIONS = {"emilia": {"min_quality": 3.0}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{corpus: (prepare's result, the tree's expectations, the tree's root)}, each built once."""
    from speech_jax.cli import main

    out = {}
    for name, write in miniature.WRITERS.items():
        root = tmp_path_factory.mktemp(name)
        expected = write(root / "src")
        data_dir = str(root / "data")
        if name == "kaldi":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert main(["prepare", "--dataset", "kaldi", "--manual-dir", str(root / "src"), "--data-dir",
                             data_dir, "--language", "en", "--vocab-size", "300"]) == 0
            result = prepare("kaldi", data_dir, manual_dir=str(root / "src"), language="en", vocab_size=300)
            result["printed"] = printed.getvalue()  # prepared again: the same corpus, reused
        else:
            result = prepare(name, data_dir, manual_dir=str(root / "src"), vocab_size=300,
                             **OPTIONS.get(name, {}))
        out[name] = (result, expected, root / "src")
    return out


def _report(result):
    with open(result["report"]) as f:
        return [json.loads(line) for line in f]


def _expected(name, result, expected):
    """(kept, bad) of the tree; for Emilia's repeated clip, whichever of the pair sits in a held-out split
    is the one dropped (train keeps its copy)."""
    kept, bad = dict(expected["kept"]), dict(expected["bad"])
    if name == "emilia":
        copy, original = "EN_B00000_S00000_W000099", "EN_B00000_S00000_W000000"
        dropped = next(r["utt_id"] for r in _report(result) if r["filter"] == "duplicate")
        assert dropped in (copy, original)
        if dropped == original:
            kept[copy] = kept.pop(original)
            bad[f"{original}.mp3"] = bad.pop(f"{copy}.mp3")
    return kept, bad


def _records(result):
    import tensorflow_datasets as tfds

    return {split: [source[i] for i in range(len(source))]
            for split in result["splits"]
            for source in [tfds.data_source(result["name"], data_dir=result["data_dir"], split=split,
                                            download=False)]}


@pytest.mark.parametrize("name", list(miniature.WRITERS))
def test_layout_gives_splits_speakers_and_texts(built, name):
    result, expected, _ = built[name]
    kept, _ = _expected(name, result, expected)
    records = _records(result)
    got = {r["utt_id"].decode(): (split, r["speaker"].decode(), r["text"].decode())
           for split, rs in records.items() for r in rs}
    assert set(got) == set(kept)
    for utt_id, (split, speaker, text) in kept.items():
        assert got[utt_id][1:] == (speaker, text), utt_id
        if split is not None:  # the corpus's own split (LibriTTS's subsets)
            assert got[utt_id][0] == split, utt_id
    speakers = {s: {r["speaker"] for r in rs} for s, rs in records.items()}
    if name == "ljspeech":  # one speaker: held-out utterances only
        assert set(records) == {"train", "validation"} and speakers["train"] == speakers["validation"]
    else:
        assert set(records) == {"train", "validation", "test_unseen"}
        assert not speakers["train"] & speakers["test_unseen"]  # zero-shot: unseen voices
    if name in ("vctk", "kaldi"):  # 4 speakers, 3 utterances each: 1 unseen, 1 validation utterance each
        assert len(speakers["test_unseen"]) == 1 and speakers["validation"] == speakers["train"]
    for r in (r for rs in records.values() for r in rs):
        assert r["audio"].dtype == np.int16 and int(r["sample_rate"]) == 16000
        assert r["duration"] == pytest.approx(r["audio"].size / 16000) and 0.8 < r["duration"] < 4
        assert r["language"].decode() == ("zh" if r["utt_id"].startswith(b"ZH") else "en")


@pytest.mark.parametrize("name", list(miniature.WRITERS))
def test_bad_files_are_reported_with_their_paths(built, name):
    result, expected, src = built[name]
    report = _report(result)
    by_file = {os.path.basename(r["wav_path"].rsplit(":", 1)[-1]) if name == "emilia" else
               r["wav_path"].replace(str(src) + "/", "") if name == "kaldi" else
               os.path.basename(r["wav_path"]): r for r in report}
    kept, bad = _expected(name, result, expected)
    if name == "emilia":
        dropped = next(r for r in report if r["filter"] == "duplicate")
        other = ({"EN_B00000_S00000_W000099", "EN_B00000_S00000_W000000"} - {dropped["utt_id"]}).pop()
        assert dropped["reason"] == f"same audio as {other}" and other in kept
    assert {k: r["filter"] for k, r in by_file.items()} == bad
    for r in report:
        assert r["wav_path"].startswith(str(src)) and r["reason"]
    rejected = {}
    for counts in result["filters"].values():
        for f, n in counts["rejected"].items():
            rejected[f] = rejected.get(f, 0) + n
    assert {f: n for f, n in rejected.items() if n} == {f: list(bad.values()).count(f) for f in set(bad.values())}
    printed = summary(result)
    assert result["report"] in printed and "left out:" in printed


def test_normalised_texts_are_counted(built):
    for name, count in (("libritts_r", 1), ("emilia", 1), ("vctk", 0)):
        assert sum(c["text_normalised"] for c in built[name][0]["filters"].values()) == count, name
    assert normalise_text("这 是 一个 测试 , ok", "zh") == "这是一个测试 , ok"
    assert normalise_text("\u201cA  b\u201d", "en") == '"A b"'


@pytest.mark.parametrize("name", ["libritts_r", "vctk", "emilia"])
def test_audio_round_trips(built, name):
    """The stored samples are the source file's, resampled to 16 kHz (wav, flac; mp3 decoded as is)."""
    result, expected, src = built[name]
    record = _records(result)["train"][0]
    utt_id = record["utt_id"].decode()
    if name == "libritts_r":
        speaker, chapter = utt_id.split("_")[:2]
        path = next(src.glob(f"*/{speaker}/{chapter}/{utt_id}.wav"))
        audio, sr = sf.read(path, dtype="float32")
    elif name == "vctk":
        audio, sr = sf.read(src / "wav48_silence_trimmed" / utt_id[:4] / f"{utt_id}_mic1.flac", dtype="float32")
    else:
        import tarfile
        for shard in sorted(src.glob("EN/*.tar")):
            with tarfile.open(shard) as tar:
                if f"{utt_id}.mp3" in tar.getnames():
                    audio, sr = sf.read(io.BytesIO(tar.extractfile(f"{utt_id}.mp3").read()), dtype="float32")
        assert record["dnsmos"] >= 3.0
    want = schema.to_int16(resample(audio, sr, 16000)).astype(np.int32)
    # mpg123 is not bit-exact between a whole read and SoundFile's block reads: 1 LSB at most.
    np.testing.assert_allclose(record["audio"].astype(np.int32), want, rtol=0, atol=1 if name == "emilia" else 0)


def test_kaldi_through_the_command_line(built):
    result, _, _ = built["kaldi"]
    printed = result["printed"]
    assert f"--config.data.name={result['name']}" in printed and result["name"] == "kaldi/16000hz_" + \
        result["name"].split("_", 1)[1]
    assert "train: kept" in printed and "unreadable 1" in printed
    records = _records(result)
    genders = {r["speaker"].decode(): r["gender"].decode() for rs in records.values() for r in rs}
    assert genders == {"spkA": "m", "spkB": "f", "spkC": "m", "spkD": "f"}


def test_pipeline_trains_from_a_prepared_corpus_by_name(built):
    """No special case: the data config names the corpus, the pipeline reads it like espeak_tts."""
    from data_pipelines.pipeline import make_dataset
    from experiments.common import base_config

    result = built["libritts_r"][0]
    c = base_config().data
    c.name, c.data_dir, c.batch_size = result["name"], result["data_dir"], 2
    batch = next(iter(make_dataset(c, split="train", training=True, frame_multiple=640)))
    assert batch["audio"].shape[0] == 2 and (batch["audio_len"] > 0).all() and (batch["text_len"] > 0).all()
    assert batch["ref_audio"].shape[0] == 2


def test_held_out_speakers_are_stable_and_disjoint():
    from data_pipelines.corpora import Utterance

    utts = [Utterance(f"s{s}_{i}", f"s{s}", "t", "p") for s in range(30) for i in range(5)]
    a = splits_lib.assign(utts, splits_lib.SplitSpec())
    b = splits_lib.assign(list(reversed(utts)), splits_lib.SplitSpec())  # listing order does not matter
    assert {k: {u.utt_id for u in v} for k, v in a.items()} == {k: {u.utt_id for u in v} for k, v in b.items()}
    assert len({u.speaker for u in a["test_unseen"]}) == 3
    assert not {u.speaker for u in a["train"]} & {u.speaker for u in a["test_unseen"]}
    assert all(sum(u.speaker == s for u in a["train"]) >= 2 for s in {u.speaker for u in a["validation"]})



def test_beam_builds_the_same_records_reports_and_counts(built, tmp_path, monkeypatch):
    """Emilia's tree through TFDS's Beam path (DirectRunner): duplicates across splits, the quality filter and
    the per-split reports come out as in the single-process build, with the shards listed by the pipeline's
    workers, never by the driver. Needs the 'beam' extra."""
    pytest.importorskip("apache_beam")
    from data_pipelines.corpora import Emilia

    def driver_listing(*args):
        raise AssertionError("the driver read the shards")

    monkeypatch.setattr(Emilia, "list_utterances", driver_listing)
    plain, _, src = built["emilia"]
    beam = prepare("emilia", str(tmp_path / "data"), manual_dir=str(src), vocab_size=300, min_quality=3.0,
                   beam="--runner=DirectRunner")
    assert beam["splits"] == plain["splits"] and beam["filters"] == plain["filters"]
    assert _report(beam) == _report(plain)
    a, b = _records(plain), _records(beam)
    for split in a:
        key = lambda r: r["utt_id"]  # noqa: E731
        for x, y in zip(sorted(a[split], key=key), sorted(b[split], key=key), strict=True):
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{split} {x['utt_id']} {k}")


def test_kaldi_folders_of_data_directories_are_splits(tmp_path):
    """data/train, data/dev, data/test_x: each a split named after its folder (dev -> validation)."""
    from etils import epath

    from data_pipelines.corpora import Kaldi

    for folder in ("train", "dev", "Test-Other"):
        d = tmp_path / folder
        d.mkdir()
        (d / "wav.scp").write_text(f"{folder}-r1 /audio/{folder}.flac\n")
        (d / "text").write_text(f"{folder}-r1 HELLO\n")
        (d / "utt2spk").write_text(f"{folder}-r1 s1\n")
    utts = Kaldi.list_utterances(None, epath.Path(tmp_path))
    assert {u.utt_id: u.split for u in utts} == {"train-r1": "train", "dev-r1": "validation",
                                                  "Test-Other-r1": "test_other"}


def test_a_missing_manual_dir_names_the_layout(tmp_path):
    with pytest.raises(ValueError, match="wav48_silence_trimmed"):
        prepare("vctk", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        prepare("vctk", str(tmp_path / "data"), manual_dir=str(tmp_path / "nowhere"))


def test_beam_without_apache_beam_is_a_clear_error(built, tmp_path, capsys):
    import importlib.util

    from speech_jax.cli import main

    if importlib.util.find_spec("apache_beam"):
        pytest.skip("Apache Beam is installed")

    src = built["ljspeech"][2]
    assert main(["prepare", "--dataset", "ljspeech", "--manual-dir", str(src), "--data-dir", str(tmp_path),
                 "--beam=--runner=DirectRunner"]) == 2
    assert "pip install 'speech_jax[beam]'" in capsys.readouterr().err


@pytest.mark.slow
def test_a_stage_trains_on_a_prepared_corpus_by_name(built, tmp_path):
    """The tokenizer stage's tiny config, only the corpus fields changed: it trains and checkpoints."""
    import numpy as np

    from speech_jax.train.loop import train
    from speech_jax.train.metrics import read_metrics
    from test_train import make_config

    result = built["ljspeech"][0]
    corpus = dict(data_dir=result["data_dir"], bpe_model=result["bpe_model"])
    config = make_config(corpus, f"--config.data.name={result['name']}", "--config.train.steps=2",
                         "--config.train.eval_every=0", "--config.train.ckpt_every=2",
                         "--config.mesh.data=1", "--config.mesh.fsdp=1", "--config.mesh.tensor=1",
                         "--config.mesh.num_devices=1")
    workdir = str(tmp_path / "tokenizer")
    assert train(config, workdir)["step"] == 2
    rows = [r for r in read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
