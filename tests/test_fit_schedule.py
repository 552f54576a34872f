"""A schedule fitted to the time left (`train.fit_schedule_at`): its length, the learning rate that follows it,
that the length is checkpointed and kept by a resume whatever `train.steps` says, and that the GAN's two
optimizers share it."""
import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from speech_jax.train import fit_schedule
from speech_jax.train.loop import train
from speech_jax.train.tasks import flow_vae
from speech_jax.train.optim import (learning_rate_now, learning_rate_schedule, schedule_steps,
                                   with_schedule_steps)
from speech_jax.train.program import build_program, resolve_config
from stages import stage_config
from test_ema import _state


def test_the_fitted_length_fills_the_time_left_at_the_steady_speed():
    # The first interval (other shapes compiling) is left out; the median of the rest is 0.5 s a step.
    assert fit_schedule.fitted_length(40, [3.0, 0.5, 0.4, 0.6], 100.0) == 40 + int(fit_schedule.FILL * 200)
    assert fit_schedule.fitted_length(40, [0.5], 10.0) == 40 + int(fit_schedule.FILL * 20)
    assert fit_schedule.fitted_length(40, [0.5], -5.0) == 41  # out of time already: one more step
    with pytest.raises(ValueError, match="no timed steps"):
        fit_schedule.fitted_length(40, [], 10.0)


@pytest.mark.parametrize("kind", ["cosine", "exponential", "constant"])
@pytest.mark.parametrize("warmup", [0, 5])
def test_the_schedule_is_optaxs_and_follows_a_traced_length(kind, warmup):
    cfg = ml_collections.ConfigDict(dict(learning_rate=1e-3, warmup_steps=warmup, decay_steps=0, schedule=kind,
                                         end_learning_rate_factor=0.1, decay_rate=0.9))
    schedule, counts = learning_rate_schedule(cfg, 30), jnp.arange(40)
    after = {"cosine": optax.cosine_decay_schedule(1e-3, 30 - warmup, alpha=0.1),
             "exponential": optax.exponential_decay(1e-3, 1, 0.9, end_value=1e-4),
             "constant": optax.constant_schedule(1e-3)}[kind]
    reference = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, warmup), after], [warmup]) if warmup else after
    np.testing.assert_allclose(schedule(counts), reference(counts), rtol=1e-6, atol=1e-12)
    # The same schedule at a length given as an array, as the fitted optimizer state holds it.
    np.testing.assert_allclose(schedule(counts, jnp.int32(30)), reference(counts), rtol=1e-6, atol=1e-12)


def test_a_run_follows_its_fitted_length_and_a_resume_keeps_it(tiny_corpus, tmp_path, monkeypatch):
    timed = []

    def fitted(step, interval_seconds, seconds_left):  # what the clock would say, fixed: 6 steps
        timed.append((step, list(interval_seconds), seconds_left))
        return 6

    monkeypatch.setattr(fit_schedule, "fitted_length", fitted)
    workdir = str(tmp_path / "tokenizer")
    config = stage_config("tokenizer", tiny_corpus, "--config.train.steps=50", "--config.train.max_minutes=30",
                          "--config.train.fit_schedule_at=2", "--config.optim.warmup_steps=2")
    result = train(config, workdir)
    assert (result["step"], result["schedule_steps"]) == (6, 6)
    [(step, intervals, seconds_left)] = timed
    assert step == 2 and len(intervals) == 1 and 0 < seconds_left <= 30 * 60
    assert int(schedule_steps(_state(config, workdir).opt_state)) == 6
    with open(f"{workdir}/metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["schedule_steps"] for r in rows if "schedule_steps" in r] == [6]
    rate = {r["step"]: r["learning_rate"] for r in rows if "learning_rate" in r}
    schedule = learning_rate_schedule(config.optim, config.train.steps)
    # Step s logs the rate of the update after s - 1 others: the warm-up's, then the 6-step cosine's to its end.
    for s in range(1, 7):
        np.testing.assert_allclose(rate[s], schedule(s - 1, 6), rtol=1e-6)
    np.testing.assert_allclose(rate[6], schedule(5, 6))
    assert rate[6] < 0.5 * float(schedule(5, 50))
    config.train.steps = 50  # a resume keeps the fitted length, not train.steps
    assert train(config, workdir) == {"step": 6, "schedule_steps": 6}
    assert len(timed) == 1


def test_fitting_is_refused_after_the_warm_up(tiny_corpus):
    config = stage_config("tokenizer", tiny_corpus, "--config.train.fit_schedule_at=5")
    resolve_config(config)
    with pytest.raises(ValueError, match="must be <= optim.warmup_steps"):
        build_program(config)


def test_the_gans_two_optimizers_follow_one_fitted_length(tiny_corpus):
    config = stage_config("flow_vae", tiny_corpus)
    tx, schedule = flow_vae.make_optimizer(config.optim, 30, fitted=True)
    params = {net: {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)} for net in (flow_vae.GEN, flow_vae.DISC)}
    state = with_schedule_steps(tx.init(params), 7)
    lengths = optax.tree_utils.tree_get_all_with_path(state, "schedule_steps")
    assert [int(v) for _, v in lengths] == [7, 7]
    # Distinct buffers: the train step donates the state, and one buffer cannot be donated twice.
    assert lengths[0][1].unsafe_buffer_pointer() != lengths[1][1].unsafe_buffer_pointer()
    assert int(schedule_steps(state)) == 7
    assert float(learning_rate_now(schedule, state, 6)) == float(schedule(6, 7))
