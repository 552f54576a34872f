"""SwiGLU feed-forward: W_o (silu(x W_gate) * x W_up)."""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import dense


class SwiGLU(nnx.Module):
    def __init__(self, d_model: int, mlp_dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.gate = dense(rngs, d_model, mlp_dim, ("embed", "mlp"), dtype=dtype)
        self.up = dense(rngs, d_model, mlp_dim, ("embed", "mlp"), dtype=dtype)
        self.down = dense(rngs, mlp_dim, d_model, ("mlp", "embed"), dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
