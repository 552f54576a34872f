"""Orbax checkpoints: train state + Grain iterator state + config, restored onto the current mesh.

Orbax writes each step to a temporary directory and commits it atomically, and `max_to_keep` only
removes older steps after a newer one has committed, so the last good checkpoint is never lost.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint._src.metadata import array_metadata_store  # as orbax's default handler has it

from speech_jax.train.state import TrainState

# Orbax saves a replicated array in slices, one a replica, so that every replica writes a part. Slicing
# compiles one small program per array shape and sharding: at a run's first save that is hundreds of
# compiles (8 s of a tiny stage's 2-core save, 30 s for 110 arrays of distinct shapes), to split writes
# that are cheaper whole. Only arrays with at least this many bytes a replica are split.
MIN_SLICE_BYTES = 16 << 20


@functools.cache  # once a process: orbax warns at every override
def _register_array_handler():
    handler = ocp.type_handlers.ArrayHandler(array_metadata_store=array_metadata_store.Store(),
                                             min_slice_bytes_for_replica_parallel=MIN_SLICE_BYTES)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


class CheckpointError(RuntimeError):
    pass


class DataHandler(grain.checkpoint.CheckpointHandler):
    """The data iterator's state, one file for all processes.

    Every process iterates the same global stream (data_pipelines/pipeline.py), so one state serves any
    number of processes and a run may resume on another process count. Checkpoints written per process
    by Grain's own handler are still read."""

    FILE = "global.json"

    def save(self, directory, item=None, args=None):
        item = item or args.item
        if jax.process_index() == 0:
            (directory / self.FILE).write_text(json.dumps(item.get_state(), indent=1))

    def restore(self, directory, item=None, args=None):
        item = item or args.item
        if not (directory / self.FILE).exists():
            return super().restore(directory, item, args)
        item.set_state(json.loads((directory / self.FILE).read_text()))
        item.start_prefetch()  # as Grain's handler does
        return item


@ocp.args.register_with_handler(DataHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(DataHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
    item: Any


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, every: int = 0, async_save: bool = True,
                 item_handlers: dict | None = None):
        _register_array_handler()
        self.directory = os.path.abspath(directory)
        self.every = every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(every, 1), enable_async_checkpointing=async_save,
            create=True)
        self.manager = ocp.CheckpointManager(
            self.directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": DataHandler(),
                           "config": ocp.JsonCheckpointHandler(),
                           **(item_handlers or {})})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_iter, config_json: dict, *, force: bool = False) -> bool:
        args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(config_json)}
        if data_iter is not None:
            args["data"] = DataSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

    def restore(self, abstract_state, data_iter, step: int | None = None):
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs).

        If the newest checkpoint cannot be read, falls back to older ones and says so; raises
        CheckpointError naming the directory when none can be read.
        """
        steps = [step] if step is not None else list(reversed(self.all_steps()))
        errors = []
        for s in steps:
            try:
                out = self._restore(s, abstract_state, data_iter)
            except Exception as e:  # corrupt or incompatible: report and try the previous one
                logging.error("checkpoint %s/%d could not be restored: %s", self.directory, s, e)
                errors.append(f"step {s}: {type(e).__name__}: {e}")
                continue
            if errors:
                logging.warning("resumed from older checkpoint step %d; newer ones were unreadable", s)
            return s, out["state"], out["config"]
        raise CheckpointError(
            f"no readable checkpoint in {self.directory}:\n  " + "\n  ".join(errors))

    def _restore(self, step: int, abstract_state, data_iter) -> dict:
        def restore(target):
            args = {"state": ocp.args.StandardRestore(target), "config": ocp.args.JsonRestore()}
            if data_iter is not None and os.path.isdir(os.path.join(self.directory, str(step), "data")):
                args["data"] = DataRestore(data_iter)
            return self.manager.restore(step, args=ocp.args.Composite(**args))

        try:
            return restore(abstract_state)
        except ValueError as e:
            # A checkpoint written before the train state had its `ema` field: the same state without it.
            if not (isinstance(abstract_state, TrainState) and abstract_state.ema is None and "ema" in str(e)):
                raise
            fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(TrainState)}
            del fields["ema"]
            out = dict(restore(fields))
            out["state"] = TrainState(**out["state"])
            return out

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
