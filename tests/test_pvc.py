"""Professional voice cloning: `speech-jax pvc` fits one unseen speaker's voice vector for the tiny AR
stage through the training loop; the loss falls, only the vector moves, and a bad speaker is a clear error."""
import json
import os

import jax
import numpy as np
import pytest

from speech_jax.cli import main
from speech_jax.infer.voice import load_voice
from speech_jax.train.restore import load_model, load_stage
from speech_jax.train.tasks import pvc
from stages import FAST_COMPILE, ROOT

CONFIG = os.path.join(ROOT, "experiments", "pvc", "tiny.py")
OVERRIDES = ["--config.train.steps=20", "--config.train.log_every=1", "--config.train.peak_flops=1e11",
             "--config.train.async_checkpointing=False", "--config.optim.learning_rate=0.05",
             f"--config.train.compiler_options={FAST_COMPILE}"]


def unseen_speaker(corpus: dict) -> str:
    from data_pipelines.sources import split_index
    return sorted(set(split_index(corpus["name"], corpus["data_dir"], "test_unseen")["speaker"]))[0]


def pvc_args(corpus, stages, speaker, out, workdir):
    return ["pvc", "--data", corpus["data_dir"], "--speaker", speaker, "--ar", stages["ar"], "--out", out,
            "--workdir", workdir, "--config", CONFIG, *OVERRIDES]


@pytest.fixture(scope="module")
def fitted(tiny_corpus, tiny_stages, tmp_path_factory):
    """The CLI's run, as a user would start it."""
    tmp = tmp_path_factory.mktemp("pvc")
    speaker = unseen_speaker(tiny_corpus)
    out, workdir = str(tmp / "voice.npz"), str(tmp / "work")
    assert main(pvc_args(tiny_corpus, tiny_stages, speaker, out, workdir)) == 0
    return dict(speaker=speaker, voice=out, workdir=workdir)


def test_pvc_loss_falls_and_only_the_voice_moves(fitted, tiny_stages):
    rows = [json.loads(line) for line in open(os.path.join(fitted["workdir"], "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 20
    # Every batch holds the speaker's same few utterances, so the losses compare across steps.
    assert np.all(np.diff(losses) <= 1e-6) and losses[-1] < losses[0] - 0.005, losses

    voice = load_voice(fitted["voice"], spk_dim=16)
    assert voice.metadata["made_by"] == "pvc" and voice.metadata["speaker"] == fitted["speaker"]
    # It started at the speaker encoder's mean over the speaker's utterances, and moved from there.
    config, _, params, rest = load_stage(fitted["workdir"], "pvc")
    _, ar = load_model(tiny_stages["ar"], "ar")
    start = pvc.mean_speaker_vector(ar, pvc.speaker_audio(config.data, "test_unseen"))
    assert np.linalg.norm(voice.v - start) > 1e-3
    np.testing.assert_allclose(voice.v_fm, start, rtol=1e-5, atol=1e-6)  # flow matching keeps the start
    np.testing.assert_array_equal(voice.v, np.asarray(jax.tree.leaves(params)[0]))
    # The AR's weights, as checkpointed with the fitted voice, are bit-identical to the AR stage's.
    _, ar_graphdef, ar_params, ar_rest = load_stage(tiny_stages["ar"], "ar")
    from flax import nnx
    trained = jax.tree.leaves(nnx.state(nnx.merge(ar_graphdef, ar_params, ar_rest)))
    frozen = jax.tree.leaves(rest["frozen"])
    assert len(trained) == len(frozen)
    for a, b in zip(trained, frozen):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_speaker_is_a_clear_error(tiny_corpus, tiny_stages, tmp_path, capsys):
    args = pvc_args(tiny_corpus, tiny_stages, "no-such-voice", str(tmp_path / "v.npz"), str(tmp_path / "w"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data.speaker='no-such-voice' has no utterances in espeak_tts/tiny/test_unseen" in err
    assert not os.path.exists(tmp_path / "v.npz")


def test_evaluate_a_voice_on_its_speakers_lines(fitted, tiny_corpus, tiny_stages, tmp_path, capsys):
    out = str(tmp_path / "eval")
    args = ["evaluate", "--from-corpus", tiny_corpus["name"], "--data-dir", tiny_corpus["data_dir"], "--out", out,
            "--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
            "--flow-matching", tiny_stages["flow_matching"], "--speaker", fitted["speaker"]]
    assert main([*args, "--voice", fitted["voice"]]) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert [u["utt"].split("/")[0] for u in results["utterances"]] == [fitted["speaker"]] * 2
    assert results["counts"]["synthesized"] == 2
    assert main([*args, "--voice", fitted["voice"], "--mode", "one_shot"]) == 2
    assert "zero-shot only" in capsys.readouterr().err


def test_the_anchor_keeps_the_voice_near_its_start(fitted, tiny_corpus, tiny_stages, tmp_path):
    """`pvc.anchor_weight` pulls the voice toward the starting mean vector: the same fit moves it far less."""
    def shifts(workdir):
        return [r["voice_shift"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
                if "voice_shift" in r]
    free = shifts(fitted["workdir"])
    assert free[0] < free[-1] and free[-1] > 1e-4, free
    args = pvc_args(tiny_corpus, tiny_stages, fitted["speaker"], str(tmp_path / "v.npz"), str(tmp_path / "w"))
    assert main([*args, "--config.pvc.anchor_weight=100"]) == 0
    anchored = shifts(str(tmp_path / "w"))
    assert len(anchored) == len(free) and anchored[-1] < 0.3 * free[-1], (anchored, free)
