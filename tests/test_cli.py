"""The `speech-jax` command line: prepare is idempotent, bad input is a clear error with exit code 2."""
import os

from speech_jax.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "tokenizer", "tiny.py")


def test_prepare_again_is_a_no_op(tiny_corpus, capsys):
    assert main(["prepare", "--dataset", "espeak_tts", "--config", "tiny", "--data-dir", tiny_corpus["data_dir"]]) == 0
    assert tiny_corpus["bpe_model"] in capsys.readouterr().out


def test_unknown_override_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--config", TINY, "--workdir", str(tmp_path), "--config.train.stepz=3"]) == 2
    assert "unknown config field 'train.stepz'" in capsys.readouterr().err


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", "--config", TINY, "--workdir", str(tmp_path / "w"), f"--config.data.data_dir={tmp_path}"])
    assert rc == 2
    assert "speech-jax prepare" in capsys.readouterr().err


def test_mesh_that_does_not_divide_the_batch(tiny_corpus, tmp_path, capsys):
    rc = main(["train", "--config", TINY, "--workdir", str(tmp_path / "w"),
               f"--config.data.data_dir={tiny_corpus['data_dir']}", "--config.data.batch_size=6",
               "--config.mesh.data=8"])
    assert rc == 2
    assert "not divisible by the data x fsdp mesh size 8" in capsys.readouterr().err


def test_demo_with_a_malformed_stage_override_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--set", "vocoder:--config.train.steps=1"]) == 2
    assert "--set takes STAGE:--config.key=value" in capsys.readouterr().err


def test_demo_with_a_negative_fm_temperature_is_a_clear_error(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--fm-temperature", "-0.5"]) == 2
    assert "fm_temperature must be >= 0" in capsys.readouterr().err
    assert not os.listdir(tmp_path)  # refused before anything is written


def test_demo_with_a_corrupt_state_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "demo_state.json").write_text('{"steps": {"prep')
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert "delete it to start the demo over" in capsys.readouterr().err
