"""Loads a trained stage from its workdir: the config saved with the checkpoint and the model weights.

Used by later stages (extract, a frozen speaker encoder, synthesis): they need the weights, not the
optimizer, so only the checkpoint's `params` and `rest` are read (an Orbax partial restore), onto
whatever devices the caller runs on now.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from speech_jax.layers import init_rngs
from speech_jax.train.checkpoint import CheckpointError, Checkpointer, abstract_with_shardings
from speech_jax.train.state import split_model
from speech_jax.train.tasks import get_task


def _checkpointer(workdir: str, item_handlers: dict | None = None) -> Checkpointer:
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoints in {workdir!r}: train that stage first "
                                f"(speech-jax train --config ... --workdir {workdir})")
    ckpt = Checkpointer(directory, async_save=False, item_handlers=item_handlers)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"no finished checkpoint in {directory!r}")
    return ckpt


def latest_step(workdir: str) -> int:
    """The step of a stage's newest finished checkpoint (a clear error when it has none)."""
    ckpt = _checkpointer(workdir)
    try:
        return int(ckpt.latest_step())
    finally:
        ckpt.close()


def read_config(workdir: str, step: int | None = None) -> ml_collections.ConfigDict:
    """The config a stage was trained with (as saved in its newest, or the given, checkpoint)."""
    ckpt = _checkpointer(workdir)
    try:
        step = ckpt.latest_step() if step is None else step
        out = ckpt.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    finally:
        ckpt.close()
    return ml_collections.ConfigDict(out["config"])


def load_stage(workdir: str, stage: str | None = None, step: int | None = None, sharding=None, mesh=None):
    """(config, graphdef, params, rest) of a trained stage; `stage` checks what the workdir holds.

    Weights only (their moving average where the stage kept one, `optim.ema_decay`): the optimizer state is
    neither built nor read. They land on `mesh`, sharded by the stage's own logical-axis rules (global arrays,
    for a training run on every host), or else on `sharding` (default: this process's first device, a full
    copy on every host).
    """
    from speech_jax import sharding as sharding_lib
    config = read_config(workdir, step)
    if stage is not None and config.stage != stage:
        raise ValueError(f"{workdir!r} holds a {config.stage!r} stage, not {stage!r}")
    task = get_task(config.stage)
    box = {}

    # A stage that kept its weights' moving average (optim.ema_decay) serves that, in place of the last step's.
    weights = "ema" if config.optim.get("ema_decay", 0.0) else "params"  # .get: configs saved before it

    def shapes(rng):
        box["graphdef"], params, rest = split_model(task.build_model(config, init_rngs(rng)))
        return {weights: params, "rest": rest}

    abstract = jax.eval_shape(shapes, jax.random.key(0))
    if mesh is not None:
        rules = tuple(tuple(r) for r in config.sharding.rules)
        shardings = sharding_lib.state_shardings(abstract, rules, mesh)
    else:
        one = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: one, abstract)
    target = abstract_with_shardings(abstract, shardings)
    ckpt = _checkpointer(workdir, {"state": ocp.PyTreeCheckpointHandler()})
    step = ckpt.latest_step() if step is None else step
    try:
        out = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
    except Exception as e:
        raise CheckpointError(f"could not load the {config.stage} stage from {workdir!r} (step {step}): "
                              f"{type(e).__name__}: {e}") from e
    finally:
        ckpt.close()
    return config, box["graphdef"], out["state"][weights], out["state"]["rest"]


def load_model(workdir: str, stage: str | None = None, step: int | None = None):
    """(config, model) with the trained weights merged in."""
    config, graphdef, params, rest = load_stage(workdir, stage, step)
    return config, nnx.merge(graphdef, params, rest)


def with_frozen_stage(state, workdir: str, stage: str):
    """`state` with a trained stage's weights in `state.rest["frozen"]` (a later stage that trains on top of
    a frozen earlier one: PVC, style adapters), sharded like the leaves they replace; weights only."""
    mesh = jax.tree.leaves(state.rest)[0].sharding.mesh
    _, graphdef, params, rest = load_stage(workdir, stage, mesh=mesh)
    src = nnx.state(nnx.merge(graphdef, params, rest))
    dst = state.rest["frozen"]
    if jax.tree.structure(dst) != jax.tree.structure(src):
        raise ValueError(f"the {stage} stage in {workdir!r} does not match this config's model")
    rest = jax.tree.map(lambda x: x, state.rest)
    rest["frozen"] = jax.tree.map(lambda d, s: jax.device_put(s.astype(d.dtype), d.sharding), dst, src)
    return state.replace(rest=rest)


def read_ar_stage(workdir: str, purpose: str, speaker_encoder: bool = False) -> ml_collections.ConfigDict:
    """The config of the trained AR stage in `workdir` that a later stage (`purpose`) builds on; with
    `speaker_encoder`, one whose speaker encoder was learned (its speaker space is what that stage uses)."""
    if not workdir:
        raise ValueError(f"{purpose} builds on a trained AR stage: set pretrained.ar_workdir")
    ar = read_config(workdir)
    if ar.stage != "ar":
        raise ValueError(f"pretrained.ar_workdir must hold an ar stage, {workdir!r} holds {ar.stage!r}")
    if speaker_encoder and ar.model.speaker != "learnable":
        raise ValueError(f"{purpose} needs the AR stage's learnable speaker encoder; the one in {workdir!r} "
                         f"has speaker={ar.model.speaker!r}: there is no speaker vector space")
    return ar


def data_on_top(base: ml_collections.ConfigDict, own: ml_collections.ConfigDict,
                from_base_when_empty=("name", "bpe_model")) -> ml_collections.ConfigDict:
    """An earlier stage's data settings with a later stage's own fields on top; the fields named in
    `from_base_when_empty`, left "", keep the earlier stage's (its corpus and text units)."""
    data = ml_collections.ConfigDict(base.to_dict())
    for key, value in own.items():
        if not (key in from_base_when_empty and value == ""):
            data[key] = value
    return data
