"""Snake activation (Ziyin et al. 2020, used by BigVGAN and DAC): x + sin²(αx) / α, one α per channel.

A periodic inductive bias for waveforms. α is log-parameterised (α = exp(log_alpha), init 1) so it stays
positive; computed in fp32 whatever the input dtype, then cast back.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param


class Snake(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.log_alpha = param(rngs, nnx.initializers.zeros_init(), (channels,), ("conv_out",))

    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = jnp.exp(self.log_alpha[...])
        x32 = x.astype(jnp.float32)
        y = x32 + jnp.sin(alpha * x32) ** 2 / (alpha + 1e-9)
        return y.astype(x.dtype)
