"""Flow matching with a speaker encoder of its own (`model.speaker_encoder="trained"`): it starts as the AR
stage's encoder, flow matching's loss trains it, synthesis reads it, and a saved voice must carry its vector."""
import os

import jax
import numpy as np
import pytest

from speech_jax.config import load_config
from speech_jax.infer.voice import Voice
from speech_jax.train.loop import train
from speech_jax.train.restore import load_model, load_stage
from speech_jax.train.tasks.flow_matching import speaker_encoder_kind
from speech_jax.train.tasks.pvc import speaker_vectors_of
from stages import MESH_8, ROOT, STEPS, stage_config, voice

LEARNING_RATE = 1e-2


@pytest.fixture(scope="module")
def own_encoder(tiny_corpus, tiny_stages, tmp_path_factory):
    """The tiny flow matching stage, trained 2 steps with its own speaker encoder."""
    workdir = str(tmp_path_factory.mktemp("fm_own_speaker"))
    config = stage_config("flow_matching", tiny_corpus, f"--config.pretrained.ar_workdir={tiny_stages['ar']}",
                          f"--config.pretrained.flow_vae_workdir={tiny_stages['flow_vae']}",
                          "--config.model.speaker_encoder=trained", f"--config.optim.learning_rate={LEARNING_RATE}",
                          *STEPS, *MESH_8)
    train(config, workdir)
    return workdir


def test_it_starts_as_the_ar_encoder_and_flow_matching_trains_it(own_encoder, tiny_stages):
    _, _, params, rest = load_stage(own_encoder, "flow_matching")
    assert "speaker_encoder" in params and rest["frozen"].get("speaker_encoder") is None
    _, _, ar_params, _ = load_stage(tiny_stages["ar"], "ar")
    trained = jax.tree.leaves(params["speaker_encoder"])
    start = jax.tree.leaves(ar_params["speaker_encoder"])
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(trained, start))
    # Two Adam steps move a weight by about the learning rate each: it started at the AR's encoder (a fresh
    # initialisation would be far off) and the flow matching loss's gradient reached it.
    assert 0 < moved <= 2.5 * LEARNING_RATE, moved


def test_synthesis_reads_its_own_vector_and_a_voice_needs_one(own_encoder, tiny_stages):
    from speech_jax.infer.synthesizer import Synthesizer
    synth = Synthesizer.from_workdirs(tokenizer=tiny_stages["tokenizer"], ar=tiny_stages["ar"],
                                      flow_matching=own_encoder)
    assert synth.spec.fm_speaker_encoder == "trained"
    ref = voice(1.5)
    audio = np.zeros((1, synth.spec.ref_samples), np.float32)
    audio[0, :len(ref)] = ref
    _, fm_spk = synth.backend.speaker(audio, np.asarray([len(ref)], np.int32))
    _, fm = load_model(own_encoder, "flow_matching")
    _, ar = load_model(tiny_stages["ar"], "ar")
    own, ars = speaker_vectors_of(fm, [ref])[0], speaker_vectors_of(ar, [ref])[0]
    np.testing.assert_allclose(np.asarray(fm_spk)[0], own, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(own - ars)) > 1e-4

    with pytest.raises(ValueError, match="speaker encoder of its own"):
        synth.load_voice(Voice(ars))
    out = synth.run("Hello there.", voice=Voice(ars, v_fm=own), seed=0)
    assert out.wav.size > 0 and np.all(np.isfinite(out.wav))


def test_the_frozen_parts_are_the_earlier_stages_weights(tiny_stages):
    # The init program leaves `frozen` as zeros for load_pretrained to fill (program.fresh_state): what trained
    # is the Flow-VAE's generator and the AR's speaker encoder, not zeros and not a random initialisation.
    _, _, _, rest = load_stage(tiny_stages["flow_matching"], "flow_matching")
    _, _, vae, _ = load_stage(tiny_stages["flow_vae"], "flow_vae")
    _, _, ar, _ = load_stage(tiny_stages["ar"], "ar")
    for frozen, source in ((rest["frozen"]["vae"], vae["generator"]),
                           (rest["frozen"]["speaker_encoder"], ar["speaker_encoder"])):
        for a, b in zip(jax.tree.leaves(frozen), jax.tree.leaves(source), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(np.any(np.asarray(x)) for x in jax.tree.leaves(rest["frozen"]))


def test_the_frozen_default_keeps_one_vector_for_both_and_the_ablation_trains_it(tiny_stages):
    from speech_jax.infer.synthesizer import load_stages
    *_, spec, _, configs = load_stages(tiny_stages["tokenizer"], tiny_stages["ar"], tiny_stages["flow_matching"])
    assert spec.fm_speaker_encoder == "frozen" and configs["flow_matching"].model.speaker_encoder == "frozen"
    ablation = load_config(os.path.join(ROOT, "experiments", "flow_matching", "ablations", "speaker_trained.py"))
    assert speaker_encoder_kind(ablation) == "trained"
    assert speaker_encoder_kind(load_config(os.path.join(ROOT, "experiments", "demo", "flow_matching.py"))) == "frozen"
    with ablation.unlocked():
        ablation.model.speaker_encoder = "learned"
    with pytest.raises(ValueError, match="one of"):
        speaker_encoder_kind(ablation)


def test_pvc_writes_flow_matching_s_vector_and_refuses_fitting_both(own_encoder, tiny_corpus, tiny_stages,
                                                                   tmp_path):
    from speech_jax.pvc import _flow_matching_vector, clone_voice
    from speech_jax.train.tasks.pvc import mean_speaker_vector, speaker_audio
    from test_pvc import CONFIG, unseen_speaker
    speaker = unseen_speaker(tiny_corpus)
    with pytest.raises(ValueError, match="fit_flow_matching"):
        clone_voice(data_dir=tiny_corpus["data_dir"], speaker=speaker, ar=tiny_stages["ar"], out=str(tmp_path / "v"),
                    workdir=str(tmp_path / "w"), config_file=CONFIG, flow_matching=own_encoder,
                    overrides=["--config.pvc.fit_flow_matching=True"])
    assert not (tmp_path / "w").exists()  # refused before any training
    config, _, _, _ = load_stage(tiny_stages["ar"], "ar")
    with config.unlocked():
        config.data.speaker, config.data.data_dir = speaker, tiny_corpus["data_dir"]
    _, fm = load_model(own_encoder, "flow_matching")
    _, ar = load_model(tiny_stages["ar"], "ar")
    audio = speaker_audio(config.data, "test_unseen")
    v_fm = _flow_matching_vector(own_encoder, config.data, "test_unseen")
    np.testing.assert_allclose(v_fm, mean_speaker_vector(fm, audio), rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(v_fm - mean_speaker_vector(ar, audio))) > 1e-4
