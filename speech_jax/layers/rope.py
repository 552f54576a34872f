"""Rotary position embedding (RoPE): rotate feature pairs by position-dependent angles so that
q·k depends on positions only through their difference."""
import jax
import jax.numpy as jnp


def apply_rope(x: jax.Array, positions: jax.Array, theta: float = 10000.0) -> jax.Array:
    """x: [B, T, H, D] (D even); positions: [B, T] or [T] integer positions. Rotates in fp32."""
    d = x.shape[-1]
    freqs = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)           # [D/2]
    pos = jnp.broadcast_to(positions, x.shape[:2]).astype(jnp.float32)
    angles = pos[..., None, None] * freqs                                    # [B, T, 1, D/2]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)                    # half-split pairing
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)
