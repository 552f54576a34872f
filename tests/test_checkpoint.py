"""Checkpoints: a corrupt newest checkpoint falls back to the last good one; none readable is a clear error; a
train state saved before its `ema` field existed resumes."""
import dataclasses
import glob
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speech_jax.train.checkpoint import CheckpointError, Checkpointer
from speech_jax.train.state import TrainState


def save_steps(directory, steps):
    ckpt = Checkpointer(directory, keep=5, async_save=False)
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    for s in steps:
        next(it)
        ckpt.save(s, {"w": jnp.full((4,), float(s))}, it, {"s": s}, force=True)
    ckpt.close()


def corrupt(directory, step):
    for path in glob.glob(os.path.join(directory, str(step), "state", "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, "wb") as f:
                f.write(b"\0garbage")


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    d = str(tmp_path / "ck")
    save_steps(d, [1, 2])
    corrupt(d, 2)
    it = iter(grain.MapDataset.range(100).to_iter_dataset())
    ckpt = Checkpointer(d)
    step, state, config = ckpt.restore(jax.eval_shape(lambda: {"w": jnp.zeros(4)}), it)
    assert step == 1 and config == {"s": 1}
    np.testing.assert_array_equal(state["w"], np.full(4, 1.0))
    assert next(it) == 1  # the data iterator resumes where step 1 left it
    assert os.path.isdir(os.path.join(d, "2"))  # nothing is deleted


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    d = str(tmp_path / "ck")
    save_steps(d, [1])
    corrupt(d, 1)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        Checkpointer(d).restore(jax.eval_shape(lambda: {"w": jnp.zeros(4)}), None)


def test_saving_replicated_arrays_compiles_nothing(tmp_path, caplog):
    """Small arrays replicated over devices are written whole, not sliced a replica each: slicing compiles
    a program per array shape, hundreds at a run's first save. Restored, they hold what was saved."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.asarray(jax.devices()).reshape(2, -1), ("data", "fsdp"))
    sharding = NamedSharding(mesh, PartitionSpec(None, "fsdp"))
    state = {f"w{i}": jax.device_put(np.full((3 + i, 8), float(i), np.float32), sharding) for i in range(6)}
    ckpt = Checkpointer(str(tmp_path / "ck"), async_save=False)
    it = iter(grain.MapDataset.range(4).to_iter_dataset())
    with jax.log_compiles(True), caplog.at_level("WARNING"):
        ckpt.save(1, state, it, {}, force=True)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], caplog.text[:2000]
    _, restored, _ = ckpt.restore(jax.eval_shape(lambda: state), None)
    for k, v in state.items():
        np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(v))


def test_a_state_saved_before_its_moving_average_field_existed_resumes(tmp_path):
    d = str(tmp_path / "ck")
    state = TrainState(step=jnp.int32(3), params={"w": jnp.arange(4.0)}, rest={}, opt_state=(jnp.ones(2),),
                       skipped=jnp.int32(1))
    old = {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState) if f.name != "ema"}
    ckpt = Checkpointer(d, async_save=False)
    ckpt.save(3, old, None, {}, force=True)
    ckpt.close()
    ckpt = Checkpointer(d)
    step, restored, _ = ckpt.restore(jax.eval_shape(lambda: state), None)
    ckpt.close()
    assert step == 3 and isinstance(restored, TrainState) and restored.ema is None
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
