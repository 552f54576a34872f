"""Low-rank adapters (LoRA) for our einsum-shaped projection weights.

`nnx.LoRA` wraps a 2-D `x @ W`; our attention weights are 3-D (d_model, heads, head_dim) with logical
axis names for sharding, so the adapter is a small module of our own: the update A·B is reshaped onto
the base weight's shape, and its factors are `nnx.LoRAParam`s (so an optimizer can select only them).
B starts at zero: an untrained adapter leaves the base model exactly unchanged.
"""
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class LoRA(nnx.Module):
    """Delta for a weight of shape in_shape + out_shape: (alpha / rank) · reshape(A @ B)."""

    def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int], rank: int, alpha: float,
                 names_in: str | None, names_out: str | None, *, rngs: nnx.Rngs):
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        d_in, d_out = math.prod(self.in_shape), math.prod(self.out_shape)
        self.scale = alpha / rank
        init_a = nnx.initializers.he_uniform()
        self.a = nnx.LoRAParam(nnx.with_partitioning(init_a, (names_in, None))(
            rngs.params(), (d_in, rank), jnp.float32))
        self.b = nnx.LoRAParam(nnx.with_partitioning(nnx.initializers.zeros_init(), (None, names_out))(
            rngs.params(), (rank, d_out), jnp.float32))

    def delta(self) -> jax.Array:
        """The weight update, shaped like the base weight."""
        a, b = self.a[...], self.b[...]  # a leading "layers" axis when blocks are stacked for scan
        return (self.scale * (a @ b)).reshape(a.shape[:-2] + self.in_shape + self.out_shape)


def _target(module: nnx.Module, name: str) -> nnx.Variable:
    """The variable adapter `lora_<name>` of `module` updates (its `ADAPTS` names the path)."""
    var = module
    for attr in module.ADAPTS[name].split("."):
        var = getattr(var, attr)
    return var


def adapters(model: nnx.Module) -> dict[str, LoRA]:
    """Every adapter of `model`, by the dotted path of the weight it updates (e.g. "decoder.blocks.0.attn.wq").

    A module with adapters names them `lora_<x>`, and its `ADAPTS[x]` is the adapted weight's path in it."""
    out = {}
    for path, module in nnx.iter_modules(model):
        for name in [n for n in vars(module) if n.startswith("lora_")]:
            out[".".join(map(str, (*path, module.ADAPTS[name[len("lora_"):]])))] = getattr(module, name)
    return out


def merge_adapters(model: nnx.Module) -> nnx.Module:
    """Adds every adapter's update into the weight it adapts and removes the adapter, in place: the model
    then computes what it computed with its adapters, at the base model's cost and in its structure."""
    for _, module in list(nnx.iter_modules(model)):
        for name in [n for n in vars(module) if n.startswith("lora_")]:
            weight = _target(module, name[len("lora_"):])
            weight[...] = weight[...] + getattr(module, name).delta().astype(weight[...].dtype)
            delattr(module, name)
    return model
