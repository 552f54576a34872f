"""The record index: the same values as the records, memory-mapped, sent to workers by name, rebuilt when damaged."""
import os
import pickle

import numpy as np
import pytest

from data_pipelines.record_index import FIELDS, record_index
from data_pipelines.sources import open_source


@pytest.fixture(scope="module")
def train(tiny_corpus):
    return open_source(tiny_corpus["name"], tiny_corpus["data_dir"], "train")


def as_read(source) -> dict[str, list]:
    """Every field of every record, read directly."""
    s = lambda x: x.decode() if isinstance(x, bytes) else str(x)  # noqa: E731
    records = [source[i] for i in range(len(source))]
    return {"speaker": [s(r["speaker"]) for r in records], "utt_id": [s(r["utt_id"]) for r in records],
            "text": [s(r["text"]) for r in records], "language": [s(r["language"]) for r in records],
            "samples": [len(r["audio"]) for r in records], "sample_rate": [int(r["sample_rate"]) for r in records]}


def test_the_index_holds_what_the_records_say_memory_mapped_and_travels_by_name(train, tmp_path):
    want = as_read(train)
    built = record_index(train, str(tmp_path / "records.train"))
    reopened = record_index(train, str(tmp_path / "records.train"))
    for index in (built, reopened, pickle.loads(pickle.dumps(reopened))):
        assert index.num_records == len(train) and set(index) == set(FIELDS)
        for field in FIELDS:
            assert list(index[field]) == want[field], field
            assert index[field][-1] == want[field][-1] and index[field][3] == want[field][3]
    assert isinstance(reopened["samples"], np.memmap) and isinstance(reopened["text"].data, np.memmap)
    # A worker receives the directory's name, not the columns: a pickle far smaller than the texts alone.
    assert len(pickle.dumps(reopened)) < sum(len(t.encode()) for t in want["text"]) / 4
    with pytest.raises(IndexError):
        reopened["text"][len(train)]


def test_speakers_group_and_select_their_records(train):
    index = record_index(train)
    speakers = index["speaker"]
    want: dict[str, list[int]] = {}
    for i, s in enumerate(speakers):
        want.setdefault(s, []).append(i)
    assert {s: list(r) for s, r in speakers.groups().items()} == want
    some = set(sorted(want)[::3])
    assert list(np.flatnonzero(speakers.isin(some))) == sorted(i for s in some for i in want[s])
    assert speakers.names == sorted(want)


@pytest.mark.parametrize("damage", ["stale", "truncated column", "empty metadata"])
def test_a_stale_or_damaged_index_is_rebuilt(train, tmp_path, damage):
    directory = str(tmp_path / "records.train")
    want = as_read(train)
    record_index(train, directory)
    if damage == "stale":  # an index of another, shorter corpus prepared in the same place
        path = os.path.join(directory, "index.json")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace(f'"records": {len(train)}', '"records": 3'))
    elif damage == "truncated column":
        path = os.path.join(directory, "text.npy")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    else:
        open(os.path.join(directory, "index.json"), "w").close()
    index = record_index(train, directory)
    assert list(index["text"]) == want["text"] and list(index["samples"]) == want["samples"]
    assert sorted(os.listdir(tmp_path)) == ["records.train"]  # no temporary directory left behind


def test_an_index_kept_as_json_by_an_earlier_version_is_converted_without_reading_the_records(train, tmp_path):
    import json
    want = as_read(train)
    directory = str(tmp_path / "records.train")
    with open(directory + ".json", "w") as f:
        json.dump(want, f)
    index = record_index([{} for _ in range(len(train))], directory)  # records that cannot be read
    for field in FIELDS:
        assert list(index[field]) == want[field], field
    assert sorted(os.listdir(tmp_path)) == ["records.train"]  # the JSON is gone: a deleted index is rebuilt
