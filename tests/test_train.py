"""The training loop on the tokenizer stage: metrics, checkpoints, exact resume, 1 vs 8 devices, skips."""
import glob
import os

import jax
import numpy as np
import pytest

from speech_jax import sharding
from speech_jax.config import apply_overrides, load_config
from speech_jax.train import checkpoint
from speech_jax.train.loop import Trainer, train
from speech_jax.train.metrics import read_metrics

from stages import FAST_COMPILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "experiments", "tokenizer", "tiny.py")

# A very small tokenizer and 2 s crops keep compilation and steps fast on 2 cores.
FAST = [
    "--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
    "--config.model.num_kv_heads=1", "--config.model.mlp_dim=64", "--config.model.codebook_size=32",
    "--config.model.code_dim=4", "--config.mel.n_mels=40",
    "--config.data.long_utterances=crop", "--config.data.max_seconds=2.0", "--config.data.buckets_seconds=[2.0]",
    "--config.data.ref_seconds=[1.0,2.0]", "--config.data.batch_size=8",
    "--config.optim.warmup_steps=2", "--config.optim.learning_rate=3e-3",
    "--config.train.steps=6", "--config.train.log_every=1", "--config.train.eval_every=6",
    "--config.train.eval_batches=1", "--config.train.ckpt_every=3",
    "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
    f"--config.train.compiler_options={FAST_COMPILE}",
]


def make_config(corpus, *extra):
    c = load_config(TINY)
    c.data.data_dir = corpus["data_dir"]
    c.data.bpe_model = corpus["bpe_model"]
    c.train.peak_flops = 1e11  # skip measuring the CPU's matmul peak in tests
    return apply_overrides(c, FAST + list(extra))


def params_of(workdir, corpus, step, *extra):
    trainer = Trainer(make_config(corpus, *extra), workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
    abstract = checkpoint.abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    _, state, _ = ckpt.restore(abstract, None, step=step)
    ckpt.close()
    return state


def flat(tree):
    # Copies: on the CPU an array can share memory with a device buffer that a donated step reuses.
    return [np.array(x, copy=True) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def full_run(tiny_corpus, tmp_path_factory):
    return shared_full_run(tiny_corpus, tmp_path_factory)


def shared_full_run(corpus, tmp_path_factory):
    """(workdir, result) of the FAST config trained 6 steps; once per test session (test_multiprocess.py
    compares several processes with it)."""
    from conftest import shared

    def build():
        workdir = str(tmp_path_factory.mktemp("full"))
        return workdir, train(make_config(corpus), workdir)
    return shared(tmp_path_factory, "tokenizer_full_run", build)


def test_run_writes_metrics_checkpoints_and_events(full_run):
    workdir, result = full_run
    assert result["step"] == 6
    rows = read_metrics(workdir)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "mel_loss", "ctc_loss", "code_usage", "perplexity", "grad_norm", "learning_rate",
                "step_time", "audio_seconds_per_s", "frames_per_s", "mfu", "skipped_steps"):
        assert all(np.isfinite(r[key]) for r in train_rows if key in r), key
        assert key in train_rows[-1], key
    eval_rows = [r for r in rows if "eval/loss" in r]
    assert [r["step"] for r in eval_rows] == [6] and "eval/ctc_cer" in eval_rows[0]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_resume_reproduces_the_uninterrupted_run(full_run, tiny_corpus, tmp_path):
    """Stopped by its time budget after the first step and at `train.stop_at_step` 4 (neither a checkpoint
    boundary), then resumed."""
    workdir, _ = full_run
    resumed = str(tmp_path / "resumed")
    out = train(make_config(tiny_corpus, "--config.train.max_minutes=1e-6"), resumed)
    assert out["step"] == 1 and out["time_budget_reached"]
    assert os.listdir(os.path.join(resumed, "checkpoints")) == ["1"]
    out = train(make_config(tiny_corpus, "--config.train.stop_at_step=4"), resumed)
    assert out["step"] == 4 and out["schedule_steps"] == 6 and not out["time_budget_reached"]
    assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["1", "3", "4"]
    out = train(make_config(tiny_corpus), resumed)
    assert out["step"] == 6 and not out["time_budget_reached"]
    want = {r["step"]: r for r in read_metrics(workdir) if "loss" in r}
    got = {r["step"]: r for r in read_metrics(resumed) if "loss" in r}
    for step in (2, 3, 4, 5, 6):
        for key in ("loss", "mel_loss", "ctc_loss", "code_usage", "grad_norm"):
            np.testing.assert_allclose(got[step][key], want[step][key], rtol=1e-5, err_msg=f"{key}@{step}")
    a, b = params_of(workdir, tiny_corpus, 6), params_of(resumed, tiny_corpus, 6)
    for x, y in zip(flat(a), flat(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_restore_onto_a_different_mesh(full_run, tiny_corpus):
    workdir, _ = full_run
    a = params_of(workdir, tiny_corpus, 6)
    b = params_of(workdir, tiny_corpus, 6, "--config.mesh.data=8", "--config.mesh.fsdp=1", "--config.mesh.tensor=1")
    kernel = [x for x in jax.tree.leaves(b.params) if x.ndim == 2][0]
    assert kernel.sharding.mesh.shape["data"] == 8
    for x, y in zip(flat(a), flat(b)):
        np.testing.assert_array_equal(x, y)


def test_finished_run_is_not_trained_again(full_run, tiny_corpus):
    workdir, _ = full_run
    assert train(make_config(tiny_corpus), workdir) == {"step": 6, "schedule_steps": 6}


@pytest.fixture(scope="module")
def trainers(tiny_corpus, tmp_path_factory):
    one = Trainer(make_config(tiny_corpus, "--config.mesh.num_devices=1", "--config.mesh.data=1",
                              "--config.mesh.fsdp=1", "--config.mesh.tensor=1"), str(tmp_path_factory.mktemp("t1")))
    eight = Trainer(make_config(tiny_corpus), str(tmp_path_factory.mktemp("t8")))
    it = eight.data_iterator("train", training=True)
    batches = [next(it) for _ in range(2)]
    return one, eight, batches


def test_one_and_eight_devices_agree(trainers):
    one, eight, batches = trainers
    assert eight.mesh.size == 8 and dict(eight.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    s1, s8 = one.initial_state(), eight.initial_state()
    for x, y in zip(flat(s1), flat(s8)):
        np.testing.assert_array_equal(x, y)
    for i, b in enumerate(batches):
        s1, m1 = one.step(s1, b, i)
        s8, m8 = eight.step(s8, b, i)
        np.testing.assert_allclose(float(m1["loss"]), float(m8["loss"]), rtol=1e-5)
    for x, y in zip(flat(s1.params), flat(s8.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_non_finite_gradients_skip_the_step(trainers):
    _, eight, batches = trainers
    state, _ = eight.step(eight.initial_state(), batches[0], 0)  # lr is 0 on the first update (warm-up)
    before = flat(state.params)
    bad = dict(batches[1])
    bad["audio"] = bad["audio"].copy()
    bad["audio"][0, 100] = np.nan
    state, m = eight.step(state, bad, 1)
    assert int(m["skipped_steps"]) == 1 and int(state.skipped) == 1 and int(state.step) == 2
    for x, y in zip(before, flat(state.params)):
        np.testing.assert_array_equal(x, y)
    state, m = eight.step(state, batches[1], 2)
    assert int(m["skipped_steps"]) == 1 and np.isfinite(float(m["loss"])) and float(m["learning_rate"]) > 0
    assert any(not np.array_equal(x, y) for x, y in zip(before, flat(state.params)))


def test_log_lines_print_plain_numbers():
    from speech_jax.train.metrics import format_metrics
    line = format_metrics({"loss": np.float64(12.78123), "step": 3, "mfu": np.float32(0.5),
                           "audio_seconds_per_s": np.mean([1.0, 2.0]), "done": True})
    assert line == "loss=12.78 step=3 mfu=0.5 audio_seconds_per_s=1.5 done=True"


# --- large-run controls: metrics one step behind, profiler window, goodput, evaluation outputs ---------

@pytest.fixture(scope="module")
def plain_run(full_run, tiny_corpus, tmp_path_factory):
    """The full run's steps (its programs come from the compilation cache) with each metrics row fetched
    at its own step, and a profiler window over steps 3 and 4; no evaluation, one checkpoint."""
    workdir = str(tmp_path_factory.mktemp("plain"))
    train(make_config(tiny_corpus, "--config.train.metrics_one_behind=False", "--config.train.profile_steps=2:4",
                      "--config.train.eval_every=0", "--config.train.ckpt_every=0"), workdir)
    return workdir


def test_metrics_one_step_behind_are_the_same_metrics(full_run, plain_run):
    want = {r["step"]: r for r in read_metrics(plain_run) if "loss" in r}
    got = {r["step"]: r for r in read_metrics(full_run[0]) if "loss" in r}  # one behind: the default
    assert sorted(got) == sorted(want) == [1, 2, 3, 4, 5, 6]
    for step, row in want.items():
        for key in ("loss", "mel_loss", "ctc_loss", "grad_norm", "learning_rate", "skipped_steps"):
            np.testing.assert_allclose(got[step][key], row[key], rtol=1e-6, err_msg=f"{key}@{step}")
        assert ("step_time" in got[step]) == ("step_time" in row)


def test_profile_window_writes_a_trace_for_tensorboard(plain_run):
    # TensorBoard's profile plugin reads <logdir>/plugins/profile/<run>/*.xplane.pb
    traces = glob.glob(os.path.join(plain_run, "tensorboard", "plugins", "profile", "*", "*.xplane.pb"))
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_goodput_shares_sum_to_about_one(full_run):
    rows = [r for r in read_metrics(full_run[0]) if "loss" in r]
    for row in rows:
        shares = {k: v for k, v in row.items() if k.startswith("goodput/")}
        assert set(shares) == {f"goodput/{k}" for k in ("step", "compile", "data", "eval", "checkpoint", "log", "init")}
        assert all(v >= 0 for v in shares.values())
        assert sum(shares.values()) <= 1.0
    last = {k: v for k, v in rows[-1].items() if k.startswith("goodput/")}
    # The rest (the loop's bookkeeping, about a second) is small; a tiny run is mostly start-up and
    # compilation, and its compilation is fast here (stages.FAST_COMPILE), so the rest is up to ~15 %.
    assert sum(last.values()) > 0.8, last
    assert last["goodput/compile"] > 0 and last["goodput/step"] > 0 and last["goodput/checkpoint"] > 0


def test_evaluation_outputs_are_not_gathered_onto_every_device(trainers):
    _, eight, batches = trainers
    with sharding.activation_rules(eight.mesh, eight.rules):
        out, labels = eight.eval_step(eight.initial_state(), eight.to_device(batches[0]))
    assert out["loss"].sharding.is_fully_replicated
    for name in ("ctc_pred", "ctc_pred_len"):
        assert not out[name].sharding.is_fully_replicated, name
        assert len(out[name].addressable_shards[0].data) < len(out[name]), name
    assert not labels["text_ids"].sharding.is_fully_replicated
