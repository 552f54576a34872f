"""Text-to-voice: descriptions drawn from the embedded corpus's speaker ids; the model learns which voice a
description names (an overfit proof); the t2v stage trains through the training loop on the tiny AR's
speaker space, AR untouched; voices from words through `speech-jax t2v` and `synthesize --voice-description`."""
import functools
import json
import os

import numpy as np
import pytest

from speech_jax.cli import main
from speech_jax.infer.voice import load_voice
from speech_jax.text import voice_description as vd
from overfit import OPTIMIZED
from stages import FAST_COMPILE, ROOT

CONFIG = os.path.join(ROOT, "experiments", "t2v", "tiny.py")
STEPS = 6


def test_descriptions_say_the_speakers_attributes_in_known_words():
    attrs = vd.speaker_attributes("fr-f3-p30-r195")
    assert attrs == vd.Attributes(language="french", gender="female", pitch="very low", pace="very fast")
    assert vd.speaker_attributes("en-croak-p60-r150").timbre == "hoarse"
    rng = np.random.default_rng(0)
    texts = [vd.describe(attrs, rng) for _ in range(200)]
    assert len(set(texts)) > 100  # varied wording
    for text in texts:
        ids, unknown = vd.encode(text, 32)
        assert unknown == [] and 0 < ids.size <= 32, text
    full = vd.describe(attrs, rng, keep=1.0)
    assert all(w in vd.words(full) for w in ("french", "low", "fast")) and "very" in vd.words(full), full
    assert vd.encode("a gravelly low voice", 8)[1] == ["gravelly"]
    with pytest.raises(ValueError, match="no attributes"):
        vd.speaker_attributes("p225")  # a VCTK speaker id says nothing about the voice


def test_the_model_learns_which_voice_a_description_names():
    """Overfit proof: four speakers, each a fixed vector (plus per-utterance spread), trained on random
    wordings of their attributes; voices sampled from each one's full description land on its own vector,
    and seeds give different voices."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax
    from flax import nnx
    from speech_jax.models.text_to_voice import TextToVoice

    cfg = ml_collections.ConfigDict(dict(desc_d_model=32, desc_layers=1, desc_heads=2, desc_mlp_dim=64,
                                         flow_hidden=128, flow_layers=2, time_dim=32, cond_dropout=0.1))
    speakers = ["en-f3-p70-r195", "en-m1-p30-r135", "fr-f1-p30-r195", "de-whisper-p70-r135"]
    attrs = [vd.speaker_attributes(s) for s in speakers]
    rng = np.random.default_rng(0)
    targets = rng.normal(size=(4, 16)).astype(np.float32) * 3 + 1

    def batch(n=64):
        who = rng.integers(0, 4, n)
        ids = np.zeros((n, 32), np.int32)
        lengths = np.zeros(n, np.int32)
        for i, k in enumerate(who):
            enc, _ = vd.encode(vd.describe(attrs[k], rng), 32)
            ids[i, :enc.size], lengths[i] = enc, enc.size
        v = targets[who] + 0.1 * rng.normal(size=(n, 16)).astype(np.float32)
        return jnp.asarray(v), jnp.asarray(ids), jnp.asarray(lengths)

    model = TextToVoice(cfg, 16, vd.VOCAB_SIZE, rngs=nnx.Rngs(0))
    model.mean.value, model.std.value = jnp.asarray(targets.mean(0)), jnp.asarray(targets.std(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    graphdef, state = nnx.split((model, optimizer))

    @functools.partial(jax.jit, compiler_options=OPTIMIZED)
    def step(state, v, ids, lengths, key):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m.loss(v, ids, lengths, key)))(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    losses = []
    for i in range(400):
        state, loss = step(state, *batch(), jax.random.key(i))
        losses.append(float(loss))
    nnx.update((model, optimizer), state)
    assert np.mean(losses[-20:]) < 0.3 * np.mean(losses[:20]), losses[::40]
    ids = np.zeros((4, 32), np.int32)
    lengths = np.zeros(4, np.int32)
    for k, a in enumerate(attrs):
        enc, _ = vd.encode(vd.describe(a, np.random.default_rng(k), keep=1.0), 32)
        ids[k, :enc.size], lengths[k] = enc, enc.size
    sample = nnx.jit(lambda m, key: m.sample(jnp.asarray(ids), jnp.asarray(lengths), key))
    first, second = np.asarray(sample(model, jax.random.key(1))), np.asarray(sample(model, jax.random.key(2)))
    distance = np.linalg.norm(first[:, None] - targets[None], axis=-1)  # [description, speaker]
    assert np.all(np.argmin(distance, axis=1) == np.arange(4)), distance
    assert np.all(np.diag(distance) < 0.25 * np.linalg.norm(targets[:, None] - targets[None], axis=-1).max())
    assert np.all(np.linalg.norm(first - second, axis=-1) > 1e-3)  # another seed, another voice


@pytest.fixture(scope="module")
def trained(tiny_corpus, tiny_stages, tmp_path_factory):
    """The stage through the training loop on the tiny AR's speaker space (a few steps: plumbing)."""
    workdir = str(tmp_path_factory.mktemp("t2v") / "work")
    args = ["train", "--config", CONFIG, "--workdir", workdir,
            f"--config.pretrained.ar_workdir={tiny_stages['ar']}", f"--config.data.data_dir={tiny_corpus['data_dir']}",
            f"--config.train.steps={STEPS}", f"--config.train.eval_every={STEPS}", "--config.train.log_every=1",
            "--config.train.eval_batches=1", "--config.data.batch_size=8", "--config.t2v.desc_d_model=16",
            "--config.t2v.desc_layers=1", "--config.t2v.desc_mlp_dim=32", "--config.t2v.flow_hidden=32",
            "--config.t2v.flow_layers=1", "--config.t2v.time_dim=16", "--config.t2v.statistics_utterances=32",
            "--config.train.async_checkpointing=False", f"--config.train.compiler_options={FAST_COMPILE}"]
    assert main(args) == 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return dict(workdir=workdir, rows=rows)


def test_the_stage_trains_t2v_only_on_the_ar_speaker_space(trained, tiny_stages):
    import jax
    from speech_jax.train.restore import load_model
    losses = [r["loss"] for r in trained["rows"] if "loss" in r]
    assert len(losses) == STEPS and np.all(np.isfinite(losses))
    final = [r for r in trained["rows"] if "eval/cosine" in r][-1]
    assert all(np.isfinite(final[k]) for k in ("eval/cosine", "eval/cosine_other", "eval_test_unseen/cosine"))
    _, model = load_model(trained["workdir"], "t2v")
    _, ar = load_model(tiny_stages["ar"], "ar")
    from flax import nnx
    for a, b in zip(jax.tree.leaves(nnx.state(model.frozen)), jax.tree.leaves(nnx.state(ar))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the AR is untouched
    # The speaker space's statistics were measured with the AR's encoder (not the initial 0 and 1).
    assert np.abs(np.asarray(model.t2v.mean[...])).max() > 0 and not np.allclose(model.t2v.std[...], 1.0)


def test_voices_from_words(trained, tiny_stages, tmp_path):
    out = str(tmp_path / "a.npz")
    assert main(["t2v", "--workdir", trained["workdir"], "--description", "a low pitched male voice, slow",
                 "--out", out]) == 0
    a = load_voice(out, spk_dim=16)
    assert a.metadata["made_by"] == "t2v" and a.metadata["description"] == "a low pitched male voice, slow"
    from speech_jax.t2v import load_t2v, voice_from_description
    model = load_t2v(trained["workdir"])
    same = voice_from_description(trained["workdir"], "a low pitched male voice, slow", model=model)
    np.testing.assert_allclose(same.v, a.v, rtol=1e-5, atol=1e-6)  # a seed is a voice
    other_seed = voice_from_description(trained["workdir"], "a low pitched male voice, slow", seed=1, model=model)
    other_words = voice_from_description(trained["workdir"], "a very high pitched woman speaking fast", model=model)
    assert np.linalg.norm(other_seed.v - a.v) > 1e-3 and np.linalg.norm(other_words.v - a.v) > 1e-3
    with pytest.raises(ValueError, match="no word this T2V model knows"):
        voice_from_description(trained["workdir"], "gravelly, warm timbre", model=model)

    wav = str(tmp_path / "out.wav")
    assert main(["synthesize", "--text", "hello there", "--voice-description", "a fast female voice",
                 "--t2v", trained["workdir"], "--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
                 "--flow-matching", tiny_stages["flow_matching"], "--out", wav, "--fm-steps", "2"]) == 0
    import soundfile as sf
    audio, _ = sf.read(wav)
    assert audio.size > 0 and np.all(np.isfinite(audio))
