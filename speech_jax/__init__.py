"""speech_jax: MiniMax-Speech in JAX/Flax."""
import flax

# Parameters carry *logical* axis names; speech_jax.sharding maps them onto the mesh itself,
# so variables must not be sharded eagerly at creation time.
flax.config.update("flax_always_shard_variable", False)

__version__ = "0.1.0"
