"""`speech-jax extract`: tokens and latents for every utterance, aligned with the corpus, resumable."""
import glob
import os

import numpy as np
import pytest

from data_pipelines.extract import ExtractError, extract
from data_pipelines.extracted import ExtractedSource
from data_pipelines.sources import open_source

HOP = 320


def test_every_utterance_has_tokens_and_latents(tiny_stages, tiny_corpus):
    meta = tiny_stages["extracted"]
    assert meta["codebook_size"] == 32 and meta["latent_dim"] == 8
    for split in ("train", "validation", "test_unseen"):
        source = open_source("espeak_tts/tiny", tiny_corpus["data_dir"], split)
        ext = ExtractedSource(meta["directory"], split)
        assert len(ext) == len(source) == meta["counts"][split]["records"]
        for i in (0, len(source) - 1):
            n_tok = len(source[i]["audio"]) // HOP // 2
            rec = ext[i]
            assert rec["tokens"].shape == (n_tok,) and rec["tokens"].max() < 32
            assert rec["latents"].shape == (2 * n_tok, 8) and rec["latents"].dtype == np.float16


def test_interrupted_extraction_resumes_to_the_same_features(tiny_stages):
    # Its own tag: the default features are read by other tests, perhaps at this moment on another worker.
    args = dict(flow_vae_workdir=tiny_stages["flow_vae"], splits=("test_unseen",), tag="resumed", batch_size=8)
    directory = extract(tiny_stages["tokenizer"], **args)["directory"]
    shard = sorted(glob.glob(os.path.join(directory, "test_unseen.array_record-*")))[0]
    before = [ExtractedSource(directory, "test_unseen")[i] for i in range(3)]
    os.remove(shard)  # as if the run died before this shard was committed
    import json
    with open(os.path.join(directory, "meta.json")) as f:
        m = json.load(f)
    m["complete"]["test_unseen"] = False
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(FileNotFoundError, match="not complete"):
        ExtractedSource(directory, "test_unseen")
    extract(tiny_stages["tokenizer"], **args)
    after = [ExtractedSource(directory, "test_unseen")[i] for i in range(3)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        np.testing.assert_array_equal(a["latents"], b["latents"])


def test_features_from_other_models_are_refused(tiny_stages):
    with pytest.raises(ExtractError, match="different models"):
        extract(tiny_stages["tokenizer"], splits=("test_unseen",))  # no Flow-VAE this time


def test_a_missing_workdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train that stage first"):
        extract(str(tmp_path / "nothing"))


def test_features_of_a_retrained_model_are_stale_and_can_be_replaced(tiny_stages):
    """Same workdir, other weights (a stage trained again): refused, or with replace_stale extracted again."""
    import json
    args = dict(flow_vae_workdir=tiny_stages["flow_vae"], splits=("test_unseen",), tag="retrained", batch_size=8)
    meta = extract(tiny_stages["tokenizer"], **args)
    weights = meta["tokenizer_weights"]
    with open(os.path.join(meta["directory"], "meta.json")) as f:
        m = json.load(f)
    m["tokenizer_weights"] = "0" * 16  # what the previous training of this workdir left
    with open(os.path.join(meta["directory"], "meta.json"), "w") as f:
        json.dump(m, f)
    with pytest.raises(ExtractError, match="tokenizer_weights"):
        extract(tiny_stages["tokenizer"], **args)
    meta = extract(tiny_stages["tokenizer"], replace_stale=True, **args)
    assert meta["tokenizer_weights"] == weights and meta["complete"]["test_unseen"]
    assert len(ExtractedSource(meta["directory"], "test_unseen")) == meta["counts"]["test_unseen"]["records"]


@pytest.mark.slow
def test_two_processes_extract_what_one_does(tiny_stages, tiny_corpus, tmp_path):
    """A 2-process job (each its own CPU device, process p takes shards p, p + 2, ...) writes the features
    one process writes; process 0 alone verifies and records each split."""
    import sys

    from speech_jax.local_job import Job
    splits, shards = ("validation", "test_unseen"), 4
    args = dict(flow_vae_workdir=tiny_stages["flow_vae"], splits=splits, batch_size=4, shard_size=shards)
    one = extract(tiny_stages["tokenizer"], tag="one_process", **args)
    argv = [sys.executable, "-m", "speech_jax.cli", "extract", "--tokenizer", tiny_stages["tokenizer"],
            "--flow-vae", tiny_stages["flow_vae"], "--splits", ",".join(splits), "--tag", "two_processes",
            "--batch-size", "4", "--shard-size", str(shards)]
    job = Job(argv, num_processes=2, devices=1, logdir=str(tmp_path / "logs"))
    try:
        assert job.wait(timeout=300) == [0, 0], job.tail()
    finally:
        job.kill()
    two = os.path.join(os.path.dirname(one["directory"]), "two_processes")
    for split in splits:
        n = one["counts"][split]["records"]
        assert n > 2 * shards  # several shards each, so both processes wrote some
        a, b = ExtractedSource(one["directory"], split), ExtractedSource(two, split)
        assert len(b) == n
        for i in range(n):
            np.testing.assert_array_equal(a[i]["tokens"], b[i]["tokens"], err_msg=f"{split} {i}")
            np.testing.assert_allclose(a[i]["latents"].astype(np.float32), b[i]["latents"].astype(np.float32),
                                       atol=2e-3, err_msg=f"{split} {i}")
    logs = [open(log).read() for log in job.logs]
    assert all("this process's shards" in log for log in logs)


def test_damaged_extraction_metadata_is_a_clear_error_that_names_the_file(tmp_path):
    (tmp_path / "meta.json").write_text("")  # e.g. a copy cut short
    with pytest.raises(ValueError, match="damaged extraction metadata .*meta.json.*speech-jax extract"):
        ExtractedSource(str(tmp_path), "train")
    assert (tmp_path / "meta.json").read_text() == ""  # left for the user to inspect
