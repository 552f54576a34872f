"""Device mesh, logical-axis rules and shardings for parameters, activations and batches.

Parameters are created with logical axis names (`nnx.with_partitioning(init, ("embed", "mlp"))`);
the config's rules map each logical name to mesh axes (`data`, `fsdp`, `tensor`), as in MaxText.
Then every state tensor of at least `sharding.fsdp_min_bytes` that the rules leave unsharded over
`fsdp` shards its largest divisible dimension over it (as big_vision's fsdp strategy does).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
# Smaller tensors stay replicated: gathering them costs more in latency than their memory is worth.
FSDP_MIN_BYTES = 1 << 18
# Axes the global batch is split over.
BATCH_AXES = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("codebook", None),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("norm", None),
)


class MeshError(ValueError):
    """The configured mesh does not fit the devices or the batch."""


def mesh_shape(cfg, num_devices: int) -> dict[str, int]:
    """Resolves `data/fsdp/tensor` sizes from config; at most one may be -1 (= the rest)."""
    sizes = {a: int(cfg.get(a, 1)) for a in MESH_AXES}
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise MeshError(f"at most one mesh axis may be -1, got {sizes}")
    if any(s == 0 or s < -1 for s in sizes.values()):
        raise MeshError(f"mesh axis sizes must be positive or -1, got {sizes}")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise MeshError(
                f"mesh {sizes}: the fixed axes ({fixed} devices) do not divide the {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise MeshError(
            f"mesh {sizes} needs {math.prod(sizes.values())} devices but {num_devices} are available; "
            "set one axis to -1 to use the rest")
    return sizes


def make_mesh(cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh over `devices` (default: all, or the first `cfg.num_devices` when that is set)."""
    devices = list(devices if devices is not None else jax.devices())
    wanted = int(cfg.get("num_devices", 0) or 0)
    if wanted:
        if wanted > len(devices):
            raise MeshError(f"mesh.num_devices={wanted} but only {len(devices)} devices are available")
        if jax.process_count() > 1:
            raise MeshError("mesh.num_devices restricts a single-process run; leave it 0 on multi-host runs")
        devices = devices[:wanted]
    sizes = mesh_shape(cfg, len(devices))
    shape = tuple(sizes[a] for a in MESH_AXES)
    try:
        arr = jax.experimental.mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # non-TPU topologies without a known layout
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES)


def maybe_initialize_distributed() -> None:
    """Multi-host launch: initialises jax.distributed when the environment describes several processes.

    Explicit: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID. Otherwise a cluster that JAX
    detects by itself (SLURM, Open MPI, multi-host TPU slices).
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    if "JAX_COORDINATOR_ADDRESS" in env:
        n = int(env.get("JAX_NUM_PROCESSES", "1"))
        if n > 1:
            if "JAX_PROCESS_ID" not in env:
                raise MeshError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but JAX_PROCESS_ID is not")
            jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], n, int(env["JAX_PROCESS_ID"]))
        return
    several = (int(env.get("SLURM_NTASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
               or "," in env.get("TPU_WORKER_HOSTNAMES", ""))
    if several:
        jax.distributed.initialize()


def _rules_dict(rules) -> dict[str, tuple[str, ...] | None]:
    out = {}
    for name, axes in rules:
        if axes is None:
            out[name] = None
        elif isinstance(axes, str):
            out[name] = (axes,)
        else:
            out[name] = tuple(axes)
    return out


def logical_to_spec(names: Sequence[str | None] | None, rules, mesh: Mesh,
                    shape: Sequence[int] | None = None) -> P:
    """Maps logical axis names to a PartitionSpec.

    A mesh axis is used at most once per array, size-1 mesh axes are dropped, and a dimension that
    the mapped axes do not divide is replicated instead (small heads such as a CTC vocabulary of 257).
    """
    if not names:
        return P()
    table = _rules_dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        axes = table.get(name) if name is not None else None
        if axes is None:
            spec.append(None)
            continue
        kept = []
        for a in axes:
            if a in used or mesh.shape[a] == 1:
                continue
            kept.append(a)
        if shape is not None and kept:
            size = math.prod(mesh.shape[a] for a in kept)
            while kept and shape[i] % size:
                kept.pop()
                size = math.prod(mesh.shape[a] for a in kept) if kept else 1
        used.update(kept)
        spec.append(tuple(kept) if len(kept) > 1 else (kept[0] if kept else None))
    return P(*spec)


def _variable_names(var) -> tuple | None:
    meta = var.get_metadata() if hasattr(var, "get_metadata") else {}
    for key in ("out_sharding", "sharding", "sharding_names"):
        if meta.get(key):
            return tuple(meta[key])
    return None


def fsdp_spec(spec: P, shape: Sequence[int], mesh: Mesh, nbytes: int,
              min_bytes: int = FSDP_MIN_BYTES) -> tuple[P, str | None]:
    """`spec` with `fsdp` added on the largest dimension it divides, when the rules gave none.

    Dimensions the rules leave unsharded come first, so tensor-parallel axes stay as the rules say;
    then an already sharded dimension may take `fsdp` as well. Returns (spec, why) where `why` says why
    the tensor could not follow the rules over `fsdp` (None when nothing needed explaining).
    """
    n = mesh.shape.get("fsdp", 1)
    entries = list(spec) + [None] * (len(shape) - len(spec))
    axes_of = [() if e is None else ((e,) if isinstance(e, str) else tuple(e)) for e in entries]
    if n == 1 or not shape or nbytes < min_bytes or any("fsdp" in a for a in axes_of):
        return spec, None
    order = sorted(range(len(shape)), key=lambda i: (bool(axes_of[i]), -shape[i], i))
    for i in order:
        if shape[i] % (math.prod(mesh.shape[a] for a in axes_of[i]) * n) == 0:
            axes = axes_of[i] + ("fsdp",)
            entries[i] = axes if len(axes) > 1 else axes[0]
            return P(*entries), f"fsdp on dimension {i} (size {shape[i]})"
    return spec, f"replicated over fsdp: no dimension divisible by fsdp={n}"


def _path_str(path) -> str:
    out = []
    for k in path:
        key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        out.append(str(key))
    return "/".join(out)


def state_shardings(tree, rules, mesh: Mesh, fsdp_min_bytes: int = FSDP_MIN_BYTES):
    """NamedShardings for a pytree holding nnx Variables (params, optimizer moments, train state).

    Variables are sharded by their logical names, then `fsdp_spec` adds `fsdp` where the rules gave
    none; other leaves (step counters, flat optimizer vectors) get `fsdp_spec` alone. Optimizer moments
    carry their parameter's names and shape, so they shard exactly like it. Each fallback is logged once
    per (names, shape).
    """
    logged: set = set()

    def one(path, leaf):
        var = leaf if isinstance(leaf, nnx.Variable) else None
        value = (var.get_value() if hasattr(var, "get_value") else var.value) if var is not None else leaf
        shape = tuple(getattr(value, "shape", ()))
        nbytes = math.prod(shape) * np.dtype(getattr(value, "dtype", np.float32)).itemsize
        names = _variable_names(var) if var is not None else None
        if names is not None and len(names) != len(shape):
            raise ValueError(f"logical names {names} do not match shape {shape}")
        wanted = logical_to_spec(names, rules, mesh)
        ruled = logical_to_spec(names, rules, mesh, shape)
        spec, why = fsdp_spec(ruled, shape, mesh, nbytes, fsdp_min_bytes)
        causes = [f"the rules' {wanted[i]} does not divide dimension {i} (size {shape[i]})"
                  for i in range(len(wanted)) if wanted[i] != ruled[i]]
        if why is not None and not any("fsdp" in c for c in causes):
            causes.append("its rules map no dimension to fsdp")
        if causes and (names, shape) not in logged:
            logged.add((names, shape))
            level = logging.WARNING if why is not None and why.startswith("replicated") else logging.INFO
            logging.log(level, "sharding %s %s %s (%d bytes): %s; %s", _path_str(path), shape, names, nbytes,
                        ", ".join(causes), why or f"sharded {spec}")
        sharding = NamedSharding(mesh, spec)
        # Keep the Variable node so the result has exactly the structure of `tree`.
        return var.replace(value=sharding) if var is not None else sharding
    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    axes = tuple(a for a in BATCH_AXES if mesh.shape[a] > 1)
    lead = axes if len(axes) > 1 else (axes[0] if axes else None)
    return NamedSharding(mesh, P(lead, *([None] * (ndim - 1))))


def host_rows(batch_sharding: NamedSharding, global_batch: int) -> slice:
    """The rows of a global batch that this process's devices hold (one contiguous block)."""
    index = batch_sharding.addressable_devices_indices_map((global_batch,) + (1,) * (len(batch_sharding.spec) - 1))
    rows = {i[0].indices(global_batch)[:2] for i in index.values()}
    start, stop = min(r[0] for r in rows), max(r[1] for r in rows)
    if sum(b - a for a, b in rows) < stop - start:  # gaps: the mesh interleaves processes on the batch axes
        raise MeshError(f"this process's devices hold rows {sorted(rows)} of the global batch, not one block; "
                        "order the mesh's devices by process")
    return slice(start, stop)


def batch_divisor(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch(global_batch: int, mesh: Mesh) -> None:
    div = batch_divisor(mesh)
    if global_batch % div:
        raise MeshError(
            f"global batch size {global_batch} is not divisible by the data x fsdp mesh size {div} "
            f"(mesh {dict(mesh.shape)}); change data.batch_size or mesh")
    if global_batch % jax.process_count():
        raise MeshError(f"global batch size {global_batch} is not divisible by the {jax.process_count()} processes")


# --- activation constraints -----------------------------------------------------------------

_ACTIVE: list[tuple[Mesh, tuple]] = []


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules):
    """While active (during tracing), `constrain` pins activations to the mesh."""
    _ACTIVE.append((mesh, tuple(tuple(r) for r in rules)))
    try:
        yield
    finally:
        _ACTIVE.pop()


def active_mesh() -> Mesh | None:
    """The mesh of the innermost `activation_rules`, or None outside it."""
    return _ACTIVE[-1][0] if _ACTIVE else None


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Logical sharding constraint at a block boundary; a no-op outside `activation_rules`."""
    if not _ACTIVE:
        return x
    mesh, rules = _ACTIVE[-1]
    spec = logical_to_spec(names, rules, mesh, x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def log_mesh(mesh: Mesh) -> None:
    logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size, jax.process_count())
