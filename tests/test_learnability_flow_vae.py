"""The Flow-VAE learns: the stage's own train step (multi-scale mel, the multi-resolution STFT loss and the
flow KL; no discriminators) overfits four espeak utterances of two voices, and their resynthesis from the
posterior mean is close in log-mel and *voiced where the input is voiced, at its pitch* (pYIN, frame by
frame: a buzz at the decoder's frame rate is voiced too, at the wrong F0). Noise with each input's own
spectral envelope (what the demo produced when it did not speak) is scored the same way and fails, so the
bar is one that unvoiced output cannot pass. (Mel alone still resynthesises these clips unvoiced at step
600: `model.lambda_stft` is what voices them in budget.)"""
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.ndimage

from speech_jax.eval.voicing import voicing_agreement
from speech_jax.models import gan_losses

from espeak_clips import SR


def envelope_noise(wav: np.ndarray) -> np.ndarray:
    """White noise shaped by the input's STFT magnitude smoothed over ~230 Hz (wider than any harmonic
    spacing): the envelope of the speech, none of its pitch."""
    spec = np.abs(librosa.stft(wav, n_fft=1024, hop_length=256))
    envelope = scipy.ndimage.uniform_filter1d(spec, size=15, axis=0)
    noise = librosa.stft(np.random.RandomState(0).randn(wav.size).astype(np.float32), n_fft=1024, hop_length=256)
    return librosa.istft(envelope * noise / (np.abs(noise) + 1e-8), hop_length=256, length=wav.size).astype(np.float32)


@pytest.fixture(scope="module")
def scored(overfit_flow_vae):
    audio, audio_len, wav_hat = (overfit_flow_vae[k] for k in ("audio", "audio_len", "wav_hat"))
    wavs = [audio[i, :n] for i, n in enumerate(audio_len)]
    hats = [wav_hat[i, :n] for i, n in enumerate(audio_len)]
    noise = np.zeros_like(audio)
    for i, w in enumerate(wavs):
        noise[i, :w.size] = envelope_noise(w)
    mask = jnp.arange(audio.shape[1])[None] < audio_len[:, None]
    return dict(mel=overfit_flow_vae["mel_distance"],
                noise_mel=float(gan_losses.multiscale_mel_loss(jnp.asarray(audio), jnp.asarray(noise), SR, mask)),
                voicing=[voicing_agreement(w, h, SR) for w, h in zip(wavs, hats)],
                noise_voicing=[voicing_agreement(w, n[:w.size], SR) for w, n in zip(wavs, noise)])


def _mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


def test_resynthesis_is_close_and_voiced_where_the_input_is(scored, overfit_flow_vae):
    assert overfit_flow_vae["skipped_steps"] == 0
    # disc_start_step = -1: reconstruction only, the discriminators neither step nor score
    assert overfit_flow_vae["discriminators_moved"] == 0 and overfit_flow_vae["d_loss"] == 0
    assert scored["mel"] < 0.7 and scored["mel"] < 0.6 * scored["noise_mel"], scored
    assert _mean(scored["voicing"], "voicing_agreement") >= 0.8, scored["voicing"]
    assert _mean(scored["voicing"], "voiced_recall") >= 0.75, scored["voicing"]
    assert _mean(scored["voicing"], "pitch_recall") >= 0.7, scored["voicing"]  # 0.81 measured


def test_envelope_noise_fails_the_same_bar(scored):
    assert _mean(scored["noise_voicing"], "voiced_recall") < 0.2, scored["noise_voicing"]
    assert _mean(scored["noise_voicing"], "voicing_agreement") < 0.8, scored["noise_voicing"]
    assert _mean(scored["noise_voicing"], "pitch_recall") < 0.2, scored["noise_voicing"]


def test_evaluation_scores_the_voicing_the_decoder_keeps_off_its_means(overfit_flow_vae):
    """`model.eval_latent_noise`: the stage's evaluation also decodes the posterior means plus noise (× each
    utterance's latent spread) and scores its voicing. A trace of noise keeps the clean resynthesis' pitch;
    noise twice the spread takes most of it (the decoder trained on its means only, as flow matching's
    latents would find it)."""
    import jax
    import ml_collections
    from flax import nnx

    import overfit
    from speech_jax.train.tasks import flow_vae as task

    def evaluate(noise):
        config = ml_collections.ConfigDict(overfit_flow_vae["config"])
        config.model.eval_latent_noise = noise
        model = task.build_model(config, nnx.Rngs(0))
        overfit.load_into(model.generator, overfit_flow_vae["generator"])
        batch = dict(audio=jnp.asarray(overfit_flow_vae["audio"]), audio_len=jnp.asarray(overfit_flow_vae["audio_len"]))
        out = jax.device_get(jax.jit(task.eval_fn)(model, batch))
        return out, task.host_eval(out, batch, None, config)

    clean, scores = evaluate(1e-4)
    np.testing.assert_allclose(clean["wav_noised"], clean["wav_hat"], atol=2e-3)
    assert scores["noised_pitch_recall"] >= scores["pitch_recall"] - 0.05, scores
    assert scores["noised_pitch_recall"] >= 0.7, scores
    _, loud = evaluate(2.0)
    assert loud["noised_pitch_recall"] < scores["noised_pitch_recall"] - 0.2, loud
    unmeasured, unscored = evaluate(0.0)
    assert "wav_noised" not in unmeasured and "noised_pitch_recall" not in unscored
