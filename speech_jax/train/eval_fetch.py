"""Evaluation outputs to the host without gathering them onto every device.

The eval step leaves its outputs where the computation put them (batch-sharded arrays stay sharded;
in-graph means come out replicated). The host reads the scalars, and the arrays only when the task uses
them on the host (`host_eval`, `eval_artifacts`, `summarize_eval`): each from its shards, or, where this
process does not hold every shard (several processes), gathered across processes.
"""
import jax
import numpy as np
from jax.experimental import multihost_utils


def to_host(x) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    if x.is_fully_replicated:  # e.g. a mean: this process's copy
        return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))  # collective: every process calls it


def fetch(outputs: dict, labels: dict, arrays: bool) -> tuple[dict, dict]:
    """Host copies of the scalar outputs, and with `arrays` of every output and label."""
    if not arrays:
        return {k: to_host(v) for k, v in outputs.items() if np.ndim(v) == 0}, {}
    return jax.tree.map(to_host, outputs), jax.tree.map(to_host, labels)


def host_eval_of(task, config):
    """The task's `host_eval`, or None where it has none or its `host_eval_wanted(config)` says the
    configuration computes nothing on the host (then the arrays stay on the devices)."""
    host_eval = getattr(task, "host_eval", None)
    wanted = getattr(task, "host_eval_wanted", None)
    if host_eval is None or (wanted is not None and not wanted(config)):
        return None
    return host_eval
