"""Pre-norm transformer: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); a stack ends in RMSNorm."""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.attention import Attention, attention_mask
from speech_jax.layers.mlp import SwiGLU
from speech_jax.layers.norms import RMSNorm
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")


class Block(nnx.Module):
    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, mlp_dim: int, *,
                 rope_theta: float = 10000.0, impl: str = "einsum", dtype=jnp.float32, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)
        self.attn = Attention(d_model, num_heads, num_kv_heads, rope_theta=rope_theta, impl=impl,
                              dtype=dtype, rngs=rngs)
        self.mlp_norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(d_model, mlp_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask=None, positions=None):
        x = constrain(x, ACT)
        x = x + self.attn(self.attn_norm(x), mask, positions)
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ACT)


class Transformer(nnx.Module):
    def __init__(self, num_layers: int, d_model: int, num_heads: int, num_kv_heads: int | None,
                 mlp_dim: int, *, rope_theta: float = 10000.0, impl: str = "einsum", dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.blocks = nnx.List([
            Block(d_model, num_heads, num_kv_heads or num_heads, mlp_dim, rope_theta=rope_theta,
                  impl=impl, dtype=dtype, rngs=rngs) for _ in range(num_layers)])
        self.norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None = None, *, causal: bool = False,
                 positions: jax.Array | None = None) -> jax.Array:
        """x [B,T,E]; key_mask [B,T] True on valid frames (padded keys are never attended)."""
        mask = attention_mask(key_mask, x.shape[1], x.shape[1], causal=causal)
        for block in self.blocks:
            x = block(x, mask, positions)
        return self.norm(x)
