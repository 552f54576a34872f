"""`speech-jax validate` and `speech-jax evaluate` on the tiny trained stages."""
import json
import os

from speech_jax.cli import main


def test_validate_writes_metrics_and_samples(tiny_stages, tmp_path):
    out = str(tmp_path / "val")
    assert main(["validate", "--workdir", tiny_stages["flow_vae"], "--batches", "1", "--out", out]) == 0
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["step"] == 2 and {"pesq_wb", "stoi", "stft_distance", "mel_distance"} <= set(metrics)
    assert {"0_original.wav", "0_resynth.wav", "mel.png"} <= set(os.listdir(out))


def test_evaluate_on_unseen_speakers_scores_against_espeak_ground_truth(tiny_stages, tiny_corpus, tmp_path):
    out = str(tmp_path / "eval")
    args = ["evaluate", "--from-corpus", "espeak_tts/tiny", "--data-dir", tiny_corpus["data_dir"], "--out", out,
            "--tokenizer", tiny_stages["tokenizer"], "--ar", tiny_stages["ar"],
            "--flow-matching", tiny_stages["flow_matching"], "--limit", "2", "--mode", "one_shot"]
    assert main(args) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["counts"]["synthesized"] == 2 and results["counts"]["mcd"] == 2
    assert results["means"]["mcd"] > 0 and results["means"]["duration_ratio"] > 0
    assert os.path.exists(os.path.join(out, "summary.md"))


def test_evaluate_needs_a_meta_list_or_a_corpus(tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path)]) == 2
    assert "--meta" in capsys.readouterr().err
