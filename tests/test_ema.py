"""The weights' moving average (`optim.ema_decay`): its recurrence, that it is checkpointed and resumed with the
run, and that later stages read it in place of the last step's weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speech_jax.train import checkpoint
from speech_jax.train.loop import Trainer, train
from speech_jax.train.program import build_program, resolve_config
from speech_jax.train.restore import load_stage
from speech_jax.train.state import ema_update
from stages import stage_config

DECAY = 0.9


def test_the_first_update_replaces_it_and_the_decay_grows_to_its_cap():
    ema, params = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    np.testing.assert_array_equal(ema_update(ema, params, jnp.int32(0), DECAY)["w"], 1.0)
    np.testing.assert_allclose(ema_update(ema, params, jnp.int32(5), DECAY)["w"], 1 - 5 / 15)
    np.testing.assert_allclose(ema_update(ema, params, jnp.int32(1000), DECAY)["w"], 1 - DECAY, rtol=1e-6)


def _state(config, workdir):
    """The run's whole train state as its newest checkpoint holds it."""
    trainer = Trainer(config, workdir)
    ckpt = checkpoint.Checkpointer(f"{workdir}/checkpoints", async_save=False)
    try:
        _, state, _ = ckpt.restore(checkpoint.abstract_with_shardings(trainer.abstract_state,
                                                                      trainer.state_shardings), None)
    finally:
        ckpt.close()
    return state


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_run_keeps_it_through_a_resume_and_later_stages_read_it(tiny_corpus, tmp_path):
    workdir = str(tmp_path / "tokenizer")
    config = stage_config("tokenizer", tiny_corpus, f"--config.optim.ema_decay={DECAY}", "--config.train.steps=1")
    train(config, workdir)
    first = _state(config, workdir)
    assert all(np.array_equal(e, p) for e, p in zip(_leaves(first.ema), _leaves(first.params), strict=True))
    config.train.steps = 2  # resumes from step 1
    train(config, workdir)
    second = _state(config, workdir)
    # After one earlier update the decay is 1 / 11.
    for e, p1, p2 in zip(_leaves(second.ema), _leaves(first.params), _leaves(second.params), strict=True):
        np.testing.assert_allclose(e, p1 / 11 + 10 * p2 / 11, rtol=1e-5, atol=1e-7)
    assert any(not np.array_equal(e, p) for e, p in zip(_leaves(second.ema), _leaves(second.params)))
    _, _, served, _ = load_stage(workdir, "tokenizer")
    for a, b in zip(_leaves(served), _leaves(second.ema), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_decays_and_a_stage_with_its_own_step_are_refused(tiny_corpus):
    config = stage_config("tokenizer", tiny_corpus, "--config.optim.ema_decay=1.0")
    resolve_config(config)
    with pytest.raises(ValueError, match="ema_decay must be in"):
        build_program(config)
    config = stage_config("flow_vae", tiny_corpus, "--config.optim.ema_decay=0.99")
    resolve_config(config)
    with pytest.raises(ValueError, match="own train step keeps no moving average"):
        build_program(config)
