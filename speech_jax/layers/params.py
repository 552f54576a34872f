"""Parameter creation with logical axis names (the sharding rules map them onto the mesh)."""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

import speech_jax  # noqa: F401  (sets flax_always_shard_variable=False before any variable exists)

Names = Sequence[str | None]


class _Stream(nnx.RngStream):
    """flax's key stream, the same keys, counting by replacing its counter: flax's `count[...] += 1` compares
    the new count's sharding with the old one's, and on a tracer that attribute's error message walks the whole
    trace so far, so a model's init under jit costs quadratic time in its parameters (10 ms a key at the
    demo's sizes, 15 s of flow matching's 40 s start-up)."""

    def __call__(self) -> jax.Array:
        key = jax.random.fold_in(self.key[...], self.count[...])
        self.count.set_value(self.count[...] + 1)
        return key


def init_rngs(seed: int | jax.Array) -> nnx.Rngs:
    """`nnx.Rngs(seed)` for building a model under a trace (jit, eval_shape): the same keys, drawn cheaply."""
    rngs = nnx.Rngs(seed)
    rngs.default = _Stream(rngs.default.key[...], tag="default")
    return rngs


def param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Names) -> nnx.Param:
    """An fp32 `nnx.Param` whose metadata carries one logical name per dimension."""
    assert len(names) == len(shape), (names, shape)
    return nnx.Param(nnx.with_partitioning(init, tuple(names))(rngs.params(), tuple(shape), jnp.float32))


def dense(rngs: nnx.Rngs, d_in: int, d_out: int, names: Names, *, dtype=jnp.float32,
          use_bias: bool = False, init=None) -> nnx.Linear:
    """`nnx.Linear` with logical names on kernel (and bias: the output name)."""
    init = init or nnx.initializers.lecun_normal()
    return nnx.Linear(
        d_in, d_out, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=nnx.with_partitioning(init, tuple(names)),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (names[-1],)),
        rngs=rngs)
