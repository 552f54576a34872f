"""RMSNorm: statistics in fp32 whatever the compute dtype."""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float = 1e-6, dtype=jnp.float32, rngs: nnx.Rngs):
        self.scale = param(rngs, nnx.initializers.ones_init(), (dim,), ("norm",))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)
