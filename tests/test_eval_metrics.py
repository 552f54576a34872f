"""Resynthesis metrics, speaker-verification EER and evaluation artefacts (host-side numpy)."""

from __future__ import annotations

import json
import logging

import librosa
import numpy as np
import pytest
import soundfile as sf

from speech_jax.eval import artifacts, resynthesis
from speech_jax.eval.resynthesis import (
    METRICS, latent_stats, mel_scales, multiresolution_stft_distance, multiscale_mel_distance, pesq_nb, pesq_wb,
    resynthesis_metrics, stoi)
from speech_jax.eval.verification import cosine_trials, equal_error_rate, speaker_eer

SR = 16000
VOWELS = ((700, 1200, 2600), (300, 2300, 3000), (500, 900, 2500), (400, 1900, 2600), (600, 1000, 2400))


def speech_like(sample_rate=SR, seconds=2.0, seed=0) -> np.ndarray:
    """Syllables of a gliding-pitch harmonic source shaped by vowel formants, with fricative bursts and
    pauses: enough voice activity for PESQ's utterance detector and STOI's silent-frame removal."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(sample_rate * seconds))
    pos, k = int(0.15 * sample_rate), 0
    while pos < out.size - int(0.3 * sample_rate):
        n = int(rng.uniform(0.15, 0.3) * sample_rate)
        t = np.arange(n) / sample_rate
        f0 = rng.uniform(100, 180) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        syllable = np.zeros(n)
        for h in range(1, 40):
            fh = h * f0
            gain = sum(1 / (1 + ((fh - fc) / (0.08 * fc + 60)) ** 2) for fc in VOWELS[k % 5]) / h ** 0.5
            syllable += np.where(fh < sample_rate / 2 - 200, gain, 0) * np.sin(h * phase)
        out[pos:pos + n] += syllable * np.sin(np.pi * np.arange(n) / n) ** 2
        pos, k = pos + n, k + 1
        if rng.uniform() < 0.4:  # a fricative: high-passed noise
            m = int(0.08 * sample_rate)
            out[pos:pos + m] += 0.15 * np.diff(rng.standard_normal(m + 1)) * np.hanning(m)
            pos += m
        pos += int(rng.uniform(0.03, 0.12) * sample_rate)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def add_noise(x, snr_db, seed=1):
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


@pytest.fixture(scope="module")
def speech():
    return speech_like()


@pytest.fixture(scope="module")
def scored(speech):
    """resynthesis_metrics of the clean signal against itself, a 30 dB and a 10 dB SNR copy."""
    return {name: resynthesis_metrics([speech], [est], SR)
            for name, est in [("same", speech), ("30dB", add_noise(speech, 30)),
                              ("10dB", add_noise(speech, 10))]}


# ----------------------------------------------------------------------------- resynthesis

def test_identical_signals_score_perfectly(scored):
    same = scored["same"]
    assert same["mel_distance"] == 0.0
    assert same["stft_distance"] == 0.0
    assert 4.4 <= same["pesq_wb"] <= 4.65
    assert 4.0 <= same["pesq_nb"] <= 4.6
    assert same["stoi"] == pytest.approx(1.0, abs=1e-6)
    assert same["num_utterances"] == 1 and same["unscored"] == 0


def test_more_noise_scores_worse_on_every_metric(scored):
    same, low, high = scored["same"], scored["30dB"], scored["10dB"]
    for distance in ("mel_distance", "stft_distance"):
        assert same[distance] < low[distance] < high[distance], distance
    for score in ("pesq_wb", "pesq_nb", "stoi"):
        assert same[score] > low[score] > high[score], score
    assert high["unscored"] == 0


def test_pesq_and_stoi_return_nan_when_they_cannot_score(speech, caplog):
    silence = np.zeros(SR, np.float32)
    hiss = 1e-6 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)  # PESQ alone: 4.64
    short = speech[SR // 2:SR // 2 + SR // 10]  # 0.1 s: under PESQ's 1/4 s and STOI's 30 frames
    with caplog.at_level(logging.WARNING, logger=resynthesis.__name__):
        for ref in (silence, hiss, short):
            assert np.isnan(pesq_wb(ref, ref, SR))
            assert np.isnan(pesq_nb(ref, ref, SR))
            assert np.isnan(stoi(ref, ref, SR))
        assert np.isnan(pesq_wb(speech, np.zeros_like(speech), SR))  # the C code raises on this one
        nan_est = speech.copy()
        nan_est[100] = np.nan
        assert np.isnan(pesq_wb(speech, nan_est, SR))
        assert np.isnan(multiscale_mel_distance(speech, nan_est, SR))
    assert sum("returning NaN" in r.message for r in caplog.records) == 12
    with pytest.raises(ValueError, match="non-finite"):
        multiscale_mel_distance(nan_est, speech, SR)  # a bad reference is a data error


def test_estimate_is_compared_over_the_reference_length(speech):
    ref = speech[:SR]
    longer = np.concatenate([ref, np.ones(500, np.float32)])  # the tail is ignored
    assert multiscale_mel_distance(ref, longer, SR) == 0.0
    assert multiresolution_stft_distance(ref, longer) == 0.0
    shorter = ref[:-800]  # zero-padded: the missing 50 ms count against it
    assert multiresolution_stft_distance(ref, shorter) > 0.1
    assert multiscale_mel_distance(ref, shorter, SR) > 0.0


def test_padded_batch_with_lengths_matches_list_and_skips_nans(speech):
    refs = [speech[:SR], speech[SR // 2:]]
    ests = [add_noise(refs[0], 20, seed=2), add_noise(refs[1], 20, seed=3)]
    lengths = np.array([r.size for r in refs])
    pad = lambda ws: np.stack([np.pad(w, (0, lengths.max() + 50 - w.size), constant_values=0.3) for w in ws])
    as_list = resynthesis_metrics(refs, ests, SR)
    as_batch = resynthesis_metrics(pad(refs), pad(ests), SR, lengths=lengths)
    assert as_batch == pytest.approx(as_list)
    one = resynthesis_metrics(refs[:1], ests[:1], SR)
    two = resynthesis_metrics(refs[1:], ests[1:], SR)
    assert as_list["mel_distance"] == pytest.approx((one["mel_distance"] + two["mel_distance"]) / 2)

    broken = [ests[0], np.full_like(ests[1], np.nan)]
    partial = resynthesis_metrics(refs, broken, SR)
    assert partial["unscored"] == len(METRICS)  # every metric of the second utterance
    assert partial["pesq_wb"] == pytest.approx(one["pesq_wb"])
    with pytest.raises(ValueError, match="2 references but 1"):
        resynthesis_metrics(refs, ests[:1], SR)


def test_other_sample_rates():
    x24 = speech_like(sample_rate=24000, seconds=1.5, seed=4)
    assert mel_scales(24000) == tuple(zip(resynthesis.DAC_WINDOWS, resynthesis.DAC_MELS))
    assert mel_scales(SR) == mel_scales(24000)
    assert pesq_wb(x24, x24, 24000) >= 4.4  # resampled to 16 kHz
    assert pesq_wb(x24, add_noise(x24, 10), 24000) < 2.5
    # At 48 kHz the lowest band of DAC's 32-sample window falls between FFT bins (0 and 1500 Hz):
    # an all-zero filter, so the shortest windows get fewer bands.
    assert librosa.filters.mel(sr=48000, n_fft=32, n_mels=5).max(axis=1).min() == 0
    capped = mel_scales(48000)
    assert capped[0][1] < 5 and capped[-1] == (2048, 320)
    for window, n_mels in capped:
        assert librosa.filters.mel(sr=48000, n_fft=window, n_mels=n_mels).max(axis=1).min() > 0
    x48 = np.repeat(x24[:12000], 2)
    assert multiscale_mel_distance(x48, x48, 48000) == 0 < multiscale_mel_distance(x48, add_noise(x48, 10), 48000)


def test_latent_stats_use_only_valid_frames():
    rng = np.random.default_rng(0)
    mean = rng.normal([1.0, -2.0, 0.0], [0.5, 1.0, 2.0], size=(3, 40, 3))
    mask = np.ones((3, 40), bool)
    mask[1, 30:] = mask[2, 10:] = False
    mean[~mask] = 1e6  # padding must not leak in
    stats = latent_stats(mean, mask)
    valid = mean[mask]
    np.testing.assert_allclose(stats["channel_mean"], valid.mean(0))
    np.testing.assert_allclose(stats["channel_std"], valid.std(0))
    assert stats["frames"] == 40 + 30 + 10
    assert stats["mean_abs_mean"] == pytest.approx(np.abs(valid.mean(0)).mean())
    assert stats["min_std"] == pytest.approx(valid.std(0).min())
    assert stats["max_std"] == pytest.approx(valid.std(0).max())
    assert stats["min_std"] < stats["mean_std"] < stats["max_std"]
    assert latent_stats(mean[:1, :20])["frames"] == 20
    with pytest.raises(ValueError, match="no frames"):
        latent_stats(mean, np.zeros_like(mask))


# ----------------------------------------------------------------------------- verification

def test_eer_perfect_inverted_and_tied():
    eer, threshold = equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0])
    assert eer == 0.0 and 0.2 < threshold <= 0.8
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])[0] == 1.0
    assert equal_error_rate([0.5] * 6, [1, 0, 1, 0, 0, 1])[0] == pytest.approx(0.5)


def test_eer_exact_small_cases():
    # Accepting >= 0.6 takes 2 of 3 targets and 1 of 3 non-targets: FPR = FNR = 1/3 exactly.
    eer, threshold = equal_error_rate([0.9, 0.6, 0.4, 0.7, 0.3, 0.2], [1, 1, 1, 0, 0, 0])
    assert eer == pytest.approx(1 / 3) and threshold == pytest.approx(0.6)
    # FNR stays 1/2 while FPR steps 1/3 -> 2/3 between 0.7 and 0.6: crossing interpolated halfway.
    eer, threshold = equal_error_rate([0.9, 0.5, 0.7, 0.6, 0.1], [1, 1, 0, 0, 0])
    assert eer == pytest.approx(0.5) and threshold == pytest.approx(0.65)
    # Order of trials and monotone rescaling of scores do not matter.
    scores, labels = np.array([0.9, 0.6, 0.4, 0.7, 0.3, 0.2]), np.array([1, 1, 1, 0, 0, 0])
    perm = np.random.default_rng(0).permutation(6)
    assert equal_error_rate(np.exp(3 * scores[perm]), labels[perm])[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="target and non-target"):
        equal_error_rate([0.1, 0.2], [1, 1])


def test_eer_of_random_scores_is_about_half():
    rng = np.random.default_rng(0)
    eer, _ = equal_error_rate(rng.uniform(size=4000), rng.integers(0, 2, size=4000))
    assert abs(eer - 0.5) < 0.04


def test_cosine_trials_pairs_and_labels():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    scores, labels = cosine_trials(emb, ["a", "a", "b", "c"])
    # pairs in order (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    np.testing.assert_allclose(scores, [1, 0, 2 ** -0.5, 0, 2 ** -0.5, 2 ** -0.5], atol=1e-12)
    np.testing.assert_array_equal(labels, [1, 0, 0, 0, 0, 0])


def test_speaker_eer_clustered_vs_random_embeddings():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(10), 6)
    centres = rng.standard_normal((10, 32))
    clustered = centres[speakers] + 0.2 * rng.standard_normal((60, 32))
    assert speaker_eer(clustered, speakers) < 0.01
    assert abs(speaker_eer(rng.standard_normal((60, 32)), speakers) - 0.5) < 0.1


# ----------------------------------------------------------------------------- artefacts

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")  # IHDR width, height


def test_save_wavs_round_trip(tmp_path, speech):
    loud = np.array([0.5, -0.25, 1.7, -3.0], np.float32)
    paths = artifacts.save_wavs(tmp_path / "new" / "dir", {"ref": speech, "est/utt 1": loud}, SR)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["ref.wav", "est_utt_1.wav"]
    audio, sr = sf.read(paths[0], dtype="float32")
    assert sr == SR and sf.info(paths[0]).subtype == "PCM_16"
    np.testing.assert_allclose(audio, speech, atol=1 / 32767)
    np.testing.assert_allclose(sf.read(paths[1], dtype="float32")[0], [0.5, -0.25, 1.0, -1.0], atol=1e-4)


def test_save_mel_comparison_png(tmp_path, speech):
    two = artifacts.save_mel_comparison(tmp_path / "figs" / "two.png", speech, add_noise(speech, 10), SR,
                                        title="step 100")
    three = artifacts.save_mel_comparison(
        tmp_path / "three.png", speech, {"vae": add_noise(speech, 20), "flow-vae": speech}, SR)
    (w2, h2), (w3, h3) = _png_size(two), _png_size(three)
    assert w2 == w3 and h3 > h2  # one more stacked panel


def test_save_loss_curves_with_eval_keys(tmp_path, caplog):
    jsonl = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 3.0 / (s + 1), "lr": 1e-3} for s in range(20)]
    rows += [{"step": s, "eval/loss": 3.5 / (s + 1), "eval/pesq_wb": 1.0 + s / 10} for s in (5, 10, 15)]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 20, "lo')  # torn last line
    with caplog.at_level(logging.WARNING, logger=artifacts.__name__):
        one_panel = artifacts.save_loss_curves(tmp_path / "a.png", jsonl, ["loss", "eval/loss", "eval/wer"])
    assert any("eval/wer" in r.message for r in caplog.records)
    two_panels = artifacts.save_loss_curves(tmp_path / "b.png", jsonl, ["loss", "eval/loss", "eval/pesq_wb"])
    assert _png_size(two_panels)[1] > _png_size(one_panel)[1]  # loss and eval/loss share a panel
    with pytest.raises(ValueError, match="eval/wer"):
        artifacts.save_loss_curves(tmp_path / "c.png", jsonl, ["eval/wer"])
    # with_eval: each key's evaluation series on every split join its panel; an eval-only metric is no warning
    rows = [{"step": s, "eval/ctc_cer": 0.5, "eval_test_unseen/ctc_cer": 0.6, "eval_test_unseen/loss": 4.0}
            for s in (5, 10)]
    with open(jsonl, "a") as f:
        f.write("\n" + "".join(json.dumps(r) + "\n" for r in rows))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=artifacts.__name__):
        grouped = artifacts.save_loss_curves(tmp_path / "d.png", jsonl, ["loss", "ctc_cer"], with_eval=True)
    assert not [r for r in caplog.records if "no rows" in r.message]
    assert _png_size(grouped)[1] == _png_size(two_panels)[1]  # two panels: loss (3 series), ctc_cer (2)


def test_pitch_recall_tells_the_speakers_pitch_from_a_voiced_buzz_at_another(speech):
    """The same speech a fifth higher is voiced wherever the input is, at the wrong F0: voicing agrees,
    pitch_recall does not (what a frame-rate decoder's buzz looks like to pYIN)."""
    import librosa
    from speech_jax.eval.voicing import voicing_agreement
    same = voicing_agreement(speech, speech, SR)
    assert same["pitch_recall"] == 1.0 and same["pitch_correlation"] == pytest.approx(1.0)
    shifted = librosa.effects.pitch_shift(speech, sr=SR, n_steps=7).astype(np.float32)
    scored = voicing_agreement(speech, shifted, SR)
    assert scored["voicing_agreement"] > 0.8 and scored["pitch_recall"] < 0.1, scored
    assert scored["pitch_correlation"] > 0.5, scored  # the contour moves with the input's, a fifth higher
    # A buzz: the input's own harmonics frozen at its median pitch. Voiced, contour flat.
    f0 = np.nanmedian(librosa.pyin(speech, fmin=60, fmax=500, sr=SR)[0])
    t = np.arange(speech.size) / SR
    envelope = np.abs(librosa.effects.preemphasis(speech))
    buzz = (np.sign(np.sin(2 * np.pi * f0 * t)) * np.convolve(envelope, np.ones(400) / 400, "same")).astype(np.float32)
    flat = voicing_agreement(speech, buzz, SR)
    assert flat["voiced_recall"] > 0.5 and abs(flat["pitch_correlation"]) < 0.3, flat
    assert np.isnan(voicing_agreement(np.zeros(SR, np.float32), speech, SR)["pitch_recall"])


def test_voicing_tells_pitched_speech_from_noise(speech):
    from speech_jax.eval.voicing import voiced_fraction, voicing_agreement
    assert voiced_fraction(speech, SR) > 0.5
    assert voicing_agreement(speech, speech, SR)["voicing_agreement"] == 1.0
    noise = np.random.RandomState(0).randn(speech.size).astype(np.float32) * 0.1
    scored = voicing_agreement(speech, noise, SR)
    assert scored["voiced_fraction_estimate"] < 0.1 and scored["voiced_recall"] < 0.1
    assert scored["voicing_agreement"] < 0.5
