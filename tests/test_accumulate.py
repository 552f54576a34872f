"""Gradient accumulation (train.grad_accum_steps): the same update as the large batch."""
import numpy as np
import pytest

from speech_jax.train.accumulate import split_microbatches
from speech_jax.train.loop import Trainer
from stages import MESH_8, stage_config
from test_train import flat

# The first Adam step is lr·g/(|g|+eps): with eps = 1 it is smooth in g, so equal gradients give equal
# updates (with the default eps it is sign(g), which rounding flips where g is near 0). No decay, no
# clipping, no warm-up. The judge: a deterministic loss with no model state (the tokenizer's VQ updates
# and restarts its codes from what each micro-batch holds).
LINEAR = ["--config.optim.eps=1.0", "--config.optim.learning_rate=1.0", "--config.optim.schedule=constant",
          "--config.optim.warmup_steps=0", "--config.optim.weight_decay=0.0", "--config.optim.clip_norm=0.0"]


def test_micro_batches_are_strided_rows():
    x = np.arange(8)[:, None] * np.ones((1, 3))
    parts = split_microbatches({"x": x}, 2)["x"]
    assert parts.shape == (2, 4, 3)
    np.testing.assert_array_equal(parts[0, :, 0], [0, 2, 4, 6])
    np.testing.assert_array_equal(parts[1, :, 0], [1, 3, 5, 7])


def test_accumulated_step_matches_the_large_batch(tiny_corpus, tmp_path):
    big = Trainer(stage_config("judge", tiny_corpus, *LINEAR, *MESH_8), str(tmp_path / "big"))
    acc = Trainer(stage_config("judge", tiny_corpus, *LINEAR, *MESH_8, "--config.train.grad_accum_steps=2"),
                  str(tmp_path / "acc"))
    batch = dict(next(big.data_iterator("train", training=True)))
    # Every row as long as the padding: masked means then weigh each example equally, so the mean of the
    # micro-batches' losses is the batch's (CTC is a mean over rows of per-label means).
    batch["audio_len"] = np.full_like(batch["audio_len"], batch["audio"].shape[1])
    init = flat(big.initial_state().params)
    s1, m1 = big.step(big.initial_state(), batch, 0)
    s2, m2 = acc.step(acc.initial_state(), batch, 0)
    assert float(m1["ctc_feasible"]) == 1.0
    for key in ("loss", "grad_norm"):
        np.testing.assert_allclose(float(m2[key]), float(m1[key]), rtol=1e-4, err_msg=key)
    moved = 0
    for p0, a, b in zip(init, flat(s1.params), flat(s2.params)):
        scale = np.abs(a - p0).max()
        np.testing.assert_allclose(b - p0, a - p0, rtol=1e-3, atol=1e-3 * scale + 1e-7)
        moved += scale > 1e-4
    assert moved > len(init) // 2  # the comparison is of real updates


def test_accumulation_needs_divisible_micro_batches(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="grad_accum_steps"):
        Trainer(stage_config("judge", tiny_corpus, *MESH_8, "--config.train.grad_accum_steps=3"), str(tmp_path))
