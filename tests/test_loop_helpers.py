"""The training loop's small helpers: logging one step behind, the profiler window's steps, goodput, which
evaluations fetch their arrays to the host."""
import time

import pytest

from speech_jax.config import load_config
from speech_jax.train.tasks import get_task
from speech_jax.train.eval_fetch import host_eval_of
from speech_jax.train.goodput import Goodput
from speech_jax.train.one_behind import OneBehind
from speech_jax.train.profile_window import parse_window


def test_a_deferred_row_is_written_at_the_next_flush_in_order():
    written = []
    behind = OneBehind(enabled=True)
    behind.submit(lambda: written.append(1), defer=True)
    assert written == []  # the loop dispatches the next step here
    behind.flush()
    behind.submit(lambda: written.append(2), defer=True)
    behind.submit(lambda: written.append(3), defer=False)  # e.g. an evaluation follows: now, after 2
    assert written == [1, 2, 3]
    behind.flush()
    assert written == [1, 2, 3]


def test_disabled_writes_at_once():
    written = []
    OneBehind(enabled=False).submit(lambda: written.append(1), defer=True)
    assert written == [1]


def test_profile_window_spec():
    assert parse_window("") is None and parse_window(None) is None
    assert parse_window("3:5") == (3, 5) and parse_window((3, 5)) == (3, 5)
    for bad in ("5:3", "-1:2", "4:4"):
        with pytest.raises(ValueError, match="profile_steps"):
            parse_window(bad)


def test_goodput_shares_of_wall_time():
    g = Goodput(time.perf_counter() - 0.05)  # the run started 50 ms ago: start-up
    g.add("init", 0.05)
    with g.timing("data"):
        time.sleep(0.05)
    shares = g.shares()
    assert 0.9 < shares["goodput/data"] + shares["goodput/init"] <= 1.0
    assert shares["goodput/step"] == 0.0


def test_flow_matching_fetches_its_evaluation_audio_only_to_score_its_voicing():
    config = load_config("experiments/flow_matching/tiny.py")
    task = get_task("flow_matching")
    assert not config.model.eval_voicing and host_eval_of(task, config) is None  # the audio stays on the devices
    config.model.eval_voicing = True
    assert host_eval_of(task, config) is task.host_eval
    judge = get_task("judge")  # no `host_eval_wanted`: always computed
    assert host_eval_of(judge, load_config("experiments/judge/tiny.py")) is judge.host_eval
