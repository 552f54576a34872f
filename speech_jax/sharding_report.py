"""Where a train state's bytes live: each tensor's logical axes, PartitionSpec, total and per-device bytes.

Works on real arrays (their own shardings) and on abstract states (shapes plus the shardings the loop
computes), so the same table describes a running job and a program compiled for a pod it has not seen.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from flax import nnx

from speech_jax.sharding import FSDP_MIN_BYTES, _path_str, _variable_names


@dataclasses.dataclass(frozen=True)
class Row:
    path: str          # e.g. "params/decoder/blocks/0/attn/q/kernel"
    part: str          # the train state field: params, rest (non-trained state), opt_state, ...
    names: tuple | None  # logical axis names (None: a leaf without them, e.g. a step counter)
    shape: tuple
    dtype: str
    spec: jax.sharding.PartitionSpec
    bytes: int         # the whole tensor
    bytes_per_device: int  # the largest shard one device holds
    flagged: bool      # replicated although at least the threshold, on a mesh of several devices


def _unbox(leaf):
    if isinstance(leaf, nnx.Variable):
        return leaf.get_value() if hasattr(leaf, "get_value") else leaf.value, _variable_names(leaf)
    return leaf, None


def sharding_report(state, shardings=None, min_bytes: int = FSDP_MIN_BYTES) -> list[Row]:
    """One row per array in `state`; shardings from `shardings` (same structure) or the arrays themselves."""
    is_var = lambda x: isinstance(x, nnx.Variable)  # noqa: E731
    leaves = jax.tree_util.tree_flatten_with_path(state, is_leaf=is_var)[0]
    if shardings is None:
        found = [_unbox(leaf)[0].sharding for _, leaf in leaves]
    else:
        found = [_unbox(s)[0] for s in jax.tree.leaves(shardings, is_leaf=is_var)]
        if len(found) != len(leaves):
            raise ValueError(f"{len(found)} shardings for {len(leaves)} arrays")
    rows = []
    for (path, leaf), sh in zip(leaves, found):
        value, names = _unbox(leaf)
        shape = tuple(value.shape)
        itemsize = np.dtype(value.dtype).itemsize
        total = math.prod(shape) * itemsize
        per_device = math.prod(sh.shard_shape(shape)) * itemsize
        spec = getattr(sh, "spec", jax.sharding.PartitionSpec())
        many = len(sh.device_set) > 1
        rows.append(Row(path=_path_str(path), part=_path_str(path[:1]), names=names, shape=shape,
                        dtype=str(np.dtype(value.dtype)), spec=spec, bytes=total, bytes_per_device=per_device,
                        flagged=many and per_device == total and total >= min_bytes))
    return rows


def totals(rows: list[Row]) -> dict[str, dict[str, int]]:
    """{part: {"bytes", "bytes_per_device", "replicated_bytes"}} and the same under "all"."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        for key in (r.part, "all"):
            t = out.setdefault(key, {"bytes": 0, "bytes_per_device": 0, "replicated_bytes": 0})
            t["bytes"] += r.bytes
            t["bytes_per_device"] += r.bytes_per_device
            t["replicated_bytes"] += r.bytes if r.bytes_per_device == r.bytes else 0
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def format_report(rows: list[Row], parts: tuple[str, ...] = ("params", "rest", "opt_state", "ema"),
                  limit: int = 0) -> str:
    """The table (tensors of `parts`, largest per-device first; the first `limit` and every flagged one
    when `limit` > 0), flagged rows marked with `!`, and totals over every part."""
    shown = sorted((r for r in rows if r.part in parts), key=lambda r: (-r.bytes_per_device, r.path))
    left = 0
    if limit > 0:
        kept = [r for i, r in enumerate(shown) if i < limit or r.flagged]
        left, shown = len(shown) - len(kept), kept
    def names_of(r):
        return "(" + ", ".join(str(n) for n in r.names) + ")" if r.names is not None else "-"

    def spec_of(r):
        return "(" + ", ".join(str(s) for s in r.spec) + ")"

    width = max([len(r.path) for r in shown] + [4])
    nw = max([len(names_of(r)) for r in shown] + [12])
    sw = max([len(spec_of(r)) for r in shown] + [4])
    lines = [f"  {'path':<{width}}  {'logical axes':<{nw}}  {'spec':<{sw}}  {'bytes':>11} {'per device':>11}"]
    for r in shown:
        lines.append(f"{'!' if r.flagged else ' '} {r.path:<{width}}  {names_of(r):<{nw}}  {spec_of(r):<{sw}}  "
                     f"{human(r.bytes):>11} {human(r.bytes_per_device):>11}")
    if left:
        lines.append(f"  ... {left} smaller tensors")
    sums = totals(rows)
    for part in [p for p in parts if p in sums] + ["all"]:
        t = sums[part]
        lines.append(f"  total {part}: {human(t['bytes'])}, {human(t['bytes_per_device'])} per device, "
                     f"{human(t['replicated_bytes'])} replicated")
    flagged = [r for r in rows if r.flagged]
    if flagged:
        lines.append(f"  ! {len(flagged)} tensors above the fsdp threshold are replicated "
                     f"({human(sum(r.bytes for r in flagged))})")
    return "\n".join(lines)
