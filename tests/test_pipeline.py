"""The Grain pipeline: determinism, resumable iterator state, same-speaker references, static shapes."""
import itertools
import os

import numpy as np
import pytest

from data_pipelines.pipeline import bucket_lengths, make_dataset
from data_pipelines.sources import open_source
from experiments.common import base_config

HOP2 = 640  # 2 × hop at 16 kHz: bucket lengths are whole 25 Hz token frames


@pytest.fixture(scope="module")
def data_cfg(tiny_corpus):
    c = base_config().data
    c.name = tiny_corpus["name"]
    c.data_dir = tiny_corpus["data_dir"]
    c.bpe_model = tiny_corpus["bpe_model"]
    c.batch_size = 4
    c.buckets_seconds = (2.0, 4.0, 8.0)
    c.max_seconds = 8.0
    return c


def take(ds, n):
    return list(itertools.islice(iter(ds), n))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batches_are_deterministic_and_static(data_cfg):
    a = take(make_dataset(data_cfg, split="train", training=True, frame_multiple=HOP2), 3)
    b = take(make_dataset(data_cfg, split="train", training=True, frame_multiple=HOP2), 3)
    buckets = bucket_lengths(data_cfg.buckets_seconds, 16000, HOP2)
    for x, y in zip(a, b):
        assert_same(x, y)
        assert x["audio"].shape[0] == 4 and x["audio"].shape[1] in buckets
        assert x["text_ids"].shape == (4, data_cfg.max_text_len)
        assert (x["audio_len"] <= x["audio"].shape[1]).all() and (x["audio_len"] > 0).all()
        # padding is zero past each length
        for row, n in zip(x["audio"], x["audio_len"]):
            assert not row[n:].any()


def assert_resumes_exactly(cfg, skip=2, check=3):
    it = iter(make_dataset(cfg, split="train", training=True, frame_multiple=HOP2))
    for _ in range(skip):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(check)]
    it2 = iter(make_dataset(cfg, split="train", training=True, frame_multiple=HOP2))
    it2.set_state(state)
    for want in expected:
        assert_same(next(it2), want)


def test_resumed_iterator_yields_the_same_batches(data_cfg):
    assert_resumes_exactly(data_cfg)


def test_reference_is_same_speaker_different_utterance(data_cfg):
    source = open_source(data_cfg.name, data_cfg.data_dir, "train")
    for batch in take(make_dataset(data_cfg, split="train", training=True, frame_multiple=HOP2), 6):
        for i, r in zip(batch["index"], batch["ref_index"]):
            assert i != r
            a, b = source[int(i)], source[int(r)]
            assert a["speaker"] == b["speaker"]
            assert a["utt_id"] != b["utt_id"]


def test_processes_read_disjoint_shards(data_cfg):
    seen = []
    for pi in range(2):
        ds = make_dataset(data_cfg, split="train", training=False, frame_multiple=HOP2,
                          process_index=pi, process_count=2)
        seen.append({int(i) for b in take(ds, 2) for i in b["index"]})
        assert take(ds, 1)[0]["audio"].shape[0] == 2  # per-process share of the global batch
    assert not seen[0] & seen[1]


def test_each_process_loads_only_its_rows_of_the_one_global_batch(data_cfg, monkeypatch):
    """Two processes' rows, side by side, are the one-process batch (same bucket, same rows), and each
    process read the audio of its own rows only: the global batch is planned from the record index."""
    from data_pipelines.pipeline import LoadExample
    cfg = data_cfg.copy_and_resolve_references()
    cfg.with_reference = True
    whole = take(make_dataset(cfg, split="train", training=True, frame_multiple=HOP2), 3)
    loads = []
    real = LoadExample.__call__
    monkeypatch.setattr(LoadExample, "__call__", lambda self, plan: loads.append(plan) or real(self, plan))
    halves = [take(make_dataset(cfg, split="train", training=True, frame_multiple=HOP2, process_index=pi,
                                process_count=2), 3) for pi in range(2)]
    assert len(loads) == 3 * cfg.batch_size  # not 2 × that: neither read the other's rows
    for want, a, b in zip(whole, *halves):
        assert_same(want, {k: np.concatenate([a[k], b[k]]) for k in want})


def test_a_stale_record_index_is_a_clear_error(data_cfg, tmp_path):
    """The index no longer matches the records (a corpus prepared again in place): say what to delete."""
    import shutil
    c = data_cfg.copy_and_resolve_references()
    c.data_dir = str(tmp_path / "data")
    shutil.copytree(data_cfg.data_dir, c.data_dir)
    take(make_dataset(c, split="train", training=False, frame_multiple=HOP2), 1)  # builds the index
    from data_pipelines.sources import corpus_dir
    path = f"{corpus_dir(c.name, c.data_dir)}/records.train/samples.npy"
    np.save(path, np.load(path) + 1)
    with pytest.raises(ValueError, match="delete the stale records.<split> directory"):
        take(make_dataset(c, split="train", training=False, frame_multiple=HOP2), 1)


def test_speakers_of_another_split_are_never_read(data_cfg):
    """`data.exclude_speakers_of`: e.g. a judge trained on another corpus never hears the voices it scores."""
    from data_pipelines.pipeline import excluded_speakers, speaker_records
    from data_pipelines.sources import split_index
    speakers = split_index(data_cfg.name, data_cfg.data_dir, "train")["speaker"]
    held_out = excluded_speakers([f"{data_cfg.name}:validation"], data_cfg.data_dir)
    some = set(sorted(held_out)[:3])
    kept = speaker_records(speakers, "", "train", some)
    assert len(kept) and not {speakers[i] for i in kept} & some
    assert {speakers[i] for i in kept} | some == set(speakers)
    c = data_cfg.copy_and_resolve_references()
    c.exclude_speakers_of = (f"{c.name}:validation",)  # tiny's validation holds every seen speaker
    with pytest.raises(ValueError, match="every speaker of .*/train is excluded"):
        make_dataset(c, split="train", training=True, frame_multiple=HOP2)
    c.exclude_speakers_of = ("validation",)
    with pytest.raises(ValueError, match="'corpus:split'"):
        make_dataset(c, split="train", training=True, frame_multiple=HOP2)


def test_batch_not_divisible_by_processes(data_cfg):
    c = data_cfg.copy_and_resolve_references()
    c.batch_size = 3
    with pytest.raises(ValueError, match="not divisible"):
        make_dataset(c, split="train", training=True, frame_multiple=HOP2, process_index=0, process_count=2)


def test_missing_corpus_is_a_clear_error(data_cfg, tmp_path):
    c = data_cfg.copy_and_resolve_references()
    c.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match="speech-jax prepare"):
        make_dataset(c, split="train", training=True, frame_multiple=HOP2)


def test_multiprocess_prefetch_resumes_exactly(data_cfg):
    c = data_cfg.copy_and_resolve_references()
    c.num_workers = 2
    assert_resumes_exactly(c, skip=3, check=2)


def test_length_grouping_cuts_padding(data_cfg):
    def padding(window):
        c = data_cfg.copy_and_resolve_references()
        c.group_window = window
        c.buckets_seconds = (2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
        batches = take(make_dataset(c, split="train", training=True, frame_multiple=HOP2), 16)
        return 1 - sum(b["audio_len"].sum() for b in batches) / sum(b["audio"].size for b in batches)

    grouped, plain = padding(8), padding(1)
    assert grouped < 0.6 * plain, (grouped, plain)


def test_validation_references_come_from_the_speakers_training_utterances(data_cfg):
    val = open_source(data_cfg.name, data_cfg.data_dir, "validation")
    train = open_source(data_cfg.name, data_cfg.data_dir, "train")
    batch = take(make_dataset(data_cfg, split="validation", training=False, frame_multiple=HOP2), 1)[0]
    for i, r in zip(batch["index"], batch["ref_index"]):
        assert r < 0  # encoded as -(train index + 1): validation has one utterance per speaker
        a, b = val[int(i)], train[int(-r - 1)]
        assert a["speaker"] == b["speaker"] and a["utt_id"] != b["utt_id"]


def test_references_from_another_corpus_are_its_other_utterances_of_the_speaker(data_cfg):
    """`data.reference_corpus`: every reference from the other corpus (here the same split read as one),
    of the same speaker, never its rendering of the target utterance itself."""
    from data_pipelines.pipeline import LoadExample, default_bpe_path
    from data_pipelines.record_index import record_index
    train = open_source(data_cfg.name, data_cfg.data_dir, "train")
    index = record_index(train)
    speakers = index["speaker"]
    cfg = data_cfg.copy_and_resolve_references()
    cfg.max_seconds = 8.0
    other = open_source(data_cfg.name, data_cfg.data_dir, "train")  # the "other corpus": same records
    load = LoadExample(train, index, cfg, default_bpe_path(cfg), training=True, ref_source=other,
                       ref_index=index, own_split_references=False)
    rng = np.random.default_rng(0)
    for i in range(0, len(train), 5):
        plan = load.plan(i, rng)
        assert plan is not None
        example = load(plan)
        assert example["ref_index"] < 0  # -(index + 1) in the other corpus
        j = -example["ref_index"] - 1
        assert speakers[j] == speakers[i] and train[j]["utt_id"] != train[i]["utt_id"]


def test_batches_without_the_target_s_audio_are_the_same_batches_but_for_it(data_cfg):
    # Stages whose step reads only the target's tokens and latents skip decoding its audio: every other field,
    # the crops (which place the tokens and latents) included, is what the batch with audio holds.
    c = data_cfg.copy_and_resolve_references()
    c.max_seconds, c.buckets_seconds = 2.0, (1.0, 2.0)  # most utterances are cropped, at random starts
    with_audio = take(make_dataset(c, split="train", training=True, frame_multiple=HOP2), 4)
    c.target_audio = False
    without = take(make_dataset(c, split="train", training=True, frame_multiple=HOP2), 4)
    for a, b in zip(with_audio, without):
        assert not b["audio"].any() and b["audio"].shape == a["audio"].shape
        assert_same({k: v for k, v in a.items() if k != "audio"}, {k: v for k, v in b.items() if k != "audio"})
    assert any(a["audio"].any() for a in with_audio)
    evaluation = take(make_dataset(c, split="validation", training=False, frame_multiple=HOP2), 1)[0]
    assert evaluation["audio"].any()  # evaluation renders and compares it


def test_a_stage_that_trains_on_the_target_s_audio_refuses_batches_without_it():
    from speech_jax.config import load_config
    from speech_jax.train.program import build_program
    config = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                                      "tokenizer", "tiny.py"))
    config.data.target_audio = False
    with pytest.raises(ValueError, match="trains on the target's audio"):
        build_program(config)
