"""experiments/continue_stage.py: a trained stage goes on from its latest checkpoint in a new workdir."""
import json
import os
import sys

import pytest

from experiments.continue_stage import continue_stage, main
from speech_jax.config import ConfigError
from speech_jax.train.restore import latest_step, read_config


def test_a_stage_continues_in_a_copy_with_a_setting_changed(tiny_stages, tmp_path):
    source = tiny_stages["flow_vae"]
    start = latest_step(source)
    out = str(tmp_path / "more")
    result = continue_stage(source, out, 2, ["--config.optim.learning_rate=0.0005"])
    assert result["step"] == latest_step(out) == start + 2
    assert latest_step(source) == start  # the source is left as it is
    logged = [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]
    assert logged and min(logged) > start  # it went on from the source's step, not from scratch
    config = read_config(out)
    assert config.optim.learning_rate == 0.0005 and config.train.steps == start + 2
    assert read_config(source).optim.learning_rate != 0.0005


def test_bad_continuations_are_clear_errors(tiny_stages, tmp_path):
    source = tiny_stages["flow_vae"]
    with pytest.raises(ValueError, match="steps"):
        continue_stage(source, str(tmp_path / "a"), 0, [])
    with pytest.raises(ValueError, match="new workdir"):
        continue_stage(source, source, 1, [])
    with pytest.raises(ConfigError, match="unknown config field"):
        continue_stage(source, str(tmp_path / "b"), 1, ["--config.optim.no_such_field=1"])
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        continue_stage(str(tmp_path / "nothing"), str(tmp_path / "c"), 1, [])


def test_the_script_reports_a_bad_continuation_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["continue_stage.py", "--from", str(tmp_path / "nothing"),
                                      "--out", str(tmp_path / "c"), "--steps", "1"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: no checkpoints" in err and "Traceback" not in err
