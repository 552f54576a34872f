"""Loads a trained stage from its workdir: the config saved with the checkpoint and the model weights.

Used by later stages (extract, a frozen speaker encoder, synthesis): they need the weights, not the
optimizer, but Orbax restores whole trees, so the abstract train state is rebuilt from the saved config.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from speech_jax.train.checkpoint import CheckpointError, Checkpointer, abstract_with_shardings
from speech_jax.train.optim import make_optimizer
from speech_jax.train.state import init_train_state
from speech_jax.train.tasks import get_task


def _checkpointer(workdir: str) -> Checkpointer:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints in {workdir!r}: train that stage first "
                                f"(speech-jax train --config ... --workdir {workdir})")
    ckpt = Checkpointer(directory, async_save=False)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"no finished checkpoint in {directory!r}")
    return ckpt


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a stage was trained with (as saved in its newest, or the given, checkpoint)."""
    ckpt = _checkpointer(workdir)
    try:
        step = ckpt.latest_step() if step is None else step
        out = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    finally:
        ckpt.close()
    return ml_collections.ConfigDict(out["config"])


def load_stage(workdir: str, stage: str | None = None, step: int | None = None, sharding=None):
    """(config, graphdef, params, rest) of a trained stage; `stage` checks what the workdir holds.

    Weights land on `sharding` (default: replicated on the first device).
    """
    config = read_config(workdir, step)
    if stage is not None and config.stage != stage:
        raise ValueError(f"{workdir!r} holds a {config.stage!r} stage, not {stage!r}")
    task = get_task(config.stage)
    tx, _ = (getattr(task, "make_optimizer", None) or make_optimizer)(config.optim, config.train.steps)

    def init(rng):
        return init_train_state(task.build_model(config, nnx.Rngs(rng)), tx)

    box = {}

    def shapes(rng):
        box["graphdef"], state = init(rng)
        return state

    abstract = jax.eval_shape(shapes, jax.random.key(0))
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = abstract_with_shardings(abstract, jax.tree.map(lambda _: sharding, abstract))
    ckpt = _checkpointer(workdir)
    try:
        _, state, _ = ckpt.restore(abstract, None, step)
    except CheckpointError as e:
        raise CheckpointError(f"could not load the {config.stage} stage from {workdir!r}: {e}") from e
    finally:
        ckpt.close()
    return config, box["graphdef"], state.params, state.rest


def load_model(workdir: str, stage: str | None = None, step: int | None = None):
    """(config, model) with the trained weights merged in."""
    config, graphdef, params, rest = load_stage(workdir, stage, step)
    return config, nnx.merge(graphdef, params, rest)
