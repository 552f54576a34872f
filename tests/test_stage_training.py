"""Flow-VAE, AR and flow-matching stages through the one training loop: metrics written by a real run,
1-device and 8-device (data × fsdp × tensor) steps agree, a restored checkpoint continues exactly."""
import jax
import numpy as np
import pytest

from speech_jax.train import checkpoint
from speech_jax.train.loop import Trainer
from speech_jax.train.metrics import read_metrics
from stages import MESH_8, STEPS, stage_config

STAGES = ("flow_vae", "ar", "flow_matching")
MESH_1 = ["--config.mesh.num_devices=1", "--config.mesh.data=1", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"]


def flat(tree):
    # Copies: on the CPU an array can share memory with a device buffer that a donated step reuses.
    return [np.array(x, copy=True) for x in jax.tree.leaves(tree)]


def _config(stage, corpus, stages, *extra):
    pretrained = []
    if stage == "flow_matching":
        pretrained = [f"--config.pretrained.ar_workdir={stages['ar']}",
                      f"--config.pretrained.flow_vae_workdir={stages['flow_vae']}"]
    return stage_config(stage, corpus, *pretrained, *STEPS, *extra)


@pytest.fixture(scope="module", params=STAGES)
def trainers(request, tiny_corpus, tiny_stages, tmp_path_factory):
    stage = request.param
    one = Trainer(_config(stage, tiny_corpus, tiny_stages, *MESH_1), str(tmp_path_factory.mktemp(f"{stage}1")))
    eight = Trainer(_config(stage, tiny_corpus, tiny_stages, *MESH_8), str(tmp_path_factory.mktemp(f"{stage}8")))
    return stage, one, eight


# What a real run logs, per stage (tiny_stages trained each for 2 steps with `train`).
LOGGED = {
    "flow_vae": ("loss", "mel_loss", "kl", "kl_weight", "g_adv", "g_fm", "d_loss", "grad_norm", "d_grad_norm",
                 "learning_rate", "step_time", "audio_seconds_per_s", "mfu"),
    "ar": ("loss", "token_accuracy", "eos_accuracy", "one_shot_fraction", "grad_norm", "tokens_per_s", "mfu"),
    "flow_matching": ("loss", "prompt_frac", "drop_frac", "grad_norm", "mfu"),
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_run_logs_the_stage_terms(stage, tiny_stages):
    rows = [r for r in read_metrics(tiny_stages[stage]) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in LOGGED[stage]:
        assert key in rows[-1] and np.isfinite(rows[-1][key]), key


def test_one_and_eight_devices_agree(trainers):
    stage, one, eight = trainers
    assert dict(eight.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    it = eight.data_iterator("train", training=True)
    batches = [next(it) for _ in range(2)]
    s1, s8 = one.initial_state(), eight.initial_state()
    for x, y in zip(flat(s1), flat(s8)):
        np.testing.assert_array_equal(x, y)
    for i, b in enumerate(batches):
        s1, m1 = one.step(s1, b, i)
        s8, m8 = eight.step(s8, b, i)
        np.testing.assert_allclose(float(m1["loss"]), float(m8["loss"]), rtol=2e-5, err_msg=stage)
    # Adam's first steps move each weight by about the learning rate whatever its gradient's size, so a near-zero
    # gradient summed in another order (8 shards) can differ in a weight's last digits: on a slower CPU of the same
    # kind one Flow-VAE weight of 12288 differed by 2.6e-5 (the losses agree to 2e-5 relative, above).
    for x, y in zip(flat(s1.params), flat(s8.params)):
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-4, err_msg=stage)


def test_restored_checkpoint_continues_exactly(trainers, tmp_path):
    """State and data iterator saved after 2 steps, restored into a fresh iterator: steps 3-4 match."""
    stage, _, eight = trainers
    ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    it = eight.data_iterator("train", training=True)
    state = eight.initial_state()
    for i in range(2):
        state, _ = eight.step(state, next(it), i)
    ckpt.save(2, state, it, {"stage": stage}, force=True)
    losses = []
    for i in range(2, 4):
        state, m = eight.step(state, next(it), i)
        losses.append(float(m["loss"]))
    want = flat(state.params)

    it2 = eight.data_iterator("train", training=True)
    abstract = checkpoint.abstract_with_shardings(eight.abstract_state, eight.state_shardings)
    step, state2, _ = ckpt.restore(abstract, it2)
    ckpt.close()
    assert step == 2
    for i in range(2, 4):
        state2, m = eight.step(state2, next(it2), i)
        np.testing.assert_allclose(float(m["loss"]), losses[i - 2], rtol=1e-6, err_msg=stage)
    for x, y in zip(want, flat(state2.params)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=stage)


def test_gan_steps_lower_the_mel_loss_on_a_fixed_batch(trainers):
    stage, _, eight = trainers
    if stage != "flow_vae":
        pytest.skip("GAN-specific")
    batch = next(eight.data_iterator("train", training=True))
    state = eight.initial_state()
    mel = []
    for i in range(6):
        state, m = eight.step(state, batch, i)
        mel.append(float(m["mel_loss"]))
    # The generator's gradient reaches it through the saved VJP: after Adam's first step (which may overshoot a
    # little at full learning rate) every step lowers it, by 3 % overall.
    assert all(b < a for a, b in zip(mel[1:], mel[2:])) and mel[-1] < 0.97 * mel[0], mel


def test_ar_references_are_never_the_target(trainers):
    stage, _, eight = trainers
    if stage != "ar":
        pytest.skip("AR-specific")
    it = eight.data_iterator("train", training=True)
    for _ in range(4):
        b = next(it)
        assert np.all(b["ref_index"] != b["index"])
        assert np.all(b["prompt_tokens_len"] <= b["prompt_tokens"].shape[1])


def test_a_late_gan_start_switches_programs_and_matches_one_conditional_program(tiny_corpus, tiny_stages, tmp_path):
    """disc_start_step 2: a run's steps 0-1 run a program without the discriminators, steps 2-3 one with them;
    the run equals the single program that switches with `lax.cond` (what AOT compiling uses), and the second
    program's compilation is kept out of the step time as the first's is."""
    from speech_jax import sharding
    from speech_jax.train.loop import train
    from speech_jax.train.tasks import flow_vae
    config = _config("flow_vae", tiny_corpus, tiny_stages, *MESH_1, "--config.model.disc_start_step=2",
                     "--config.train.steps=4")
    trainer = Trainer(config, str(tmp_path / "reference"))
    assert [first for first, _ in trainer.train_phases] == [0, 2]
    train(config, str(tmp_path / "run"))
    rows = [r for r in read_metrics(str(tmp_path / "run")) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert ["step_time" in r for r in rows] == [False, True, False, True]  # steps 0 and 2 compile

    one_program = jax.jit(flow_vae.make_train_step(flow_vae, trainer.graphdef, trainer.tx, trainer.schedule))
    it = trainer.data_iterator("train", training=True)  # the run's batches and step keys
    single = trainer.initial_state()
    for i, row in enumerate(rows):
        with sharding.activation_rules(trainer.mesh, trainer.rules):
            single, m = one_program(single, trainer.to_device(next(it)), jax.random.fold_in(trainer._rng, i))
        assert (row["d_loss"] > 0) == (i >= 2) and row["disc_active"] == float(i >= 2)
        np.testing.assert_allclose(row["loss"], float(m["loss"]), rtol=1e-5)
        np.testing.assert_allclose(row["d_loss"], float(m["d_loss"]), rtol=1e-5)
    ckpt = checkpoint.Checkpointer(str(tmp_path / "run" / "checkpoints"), async_save=False)
    step, phased, _ = ckpt.restore(checkpoint.abstract_with_shardings(trainer.abstract_state,
                                                                      trainer.state_shardings), None)
    ckpt.close()
    assert step == 4
    # Adam scales each gradient to about the learning rate, so where a gradient is at rounding level the two
    # programs' fusions (float sums in another order) can move a weight by a share of one step (measured: up to
    # 10 %, at 9 of 82k weights); the wrong phase at a step would move most weights by about a whole step (and
    # its discriminators would not move).
    lr = config.optim.learning_rate
    for x, y in zip(flat(phased.params), flat(single.params)):
        diff = np.abs(np.asarray(x) - np.asarray(y))
        assert diff.max() <= 0.5 * lr
        assert np.mean(diff > 0.05 * lr + 1e-4 * np.abs(np.asarray(y))) <= 1e-3
