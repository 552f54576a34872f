"""Flow matching's view of the Flow-VAE latent space: latents shifted and scaled to about unit variance.

Flow matching starts its ODE from N(0, I) noise, so it is tuned to targets of about that scale; a Flow-VAE
whose encoder scales its means up (it does under a σ floor: spread 0.9 → 17, docs/what_limits_quality.md)
would otherwise leave the noise a small perturbation of the data. Latent diffusion models handle this with
a scale factor measured on the data (Rombach et al. 2022); here the statistics are measured on the
extracted training latents when a run starts and travel in the checkpoint, so training, evaluation,
synthesis and an exported bundle all read the same ones.

  kind "channel": each channel centred and divided by its own standard deviation;
  kind "global":  each channel centred, all divided by one standard deviation (the channels keep their
                  relative scales, so a channel the decoder ignores stays small).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

KINDS = ("none", "channel", "global")
MIN_STD = 1e-4  # a channel with no variance is shifted, not blown up


class LatentStatistic(nnx.Variable):
    """Measured on the data, not trained (it is not an nnx.Param, so it travels in the state's `rest`)."""


class LatentNorm(nnx.Module):
    def __init__(self, latent_dim: int, kind: str):
        if kind not in KINDS[1:]:
            raise ValueError(f"latent_norm={kind!r}; use one of {KINDS}")
        self.kind = kind
        self.mean = LatentStatistic(jnp.zeros((latent_dim,), jnp.float32))
        self.std = LatentStatistic(jnp.ones((latent_dim,), jnp.float32))

    def normalize(self, z: jax.Array) -> jax.Array:
        return ((z.astype(jnp.float32) - self.mean[...]) / self.std[...]).astype(z.dtype)

    def denormalize(self, x: jax.Array) -> jax.Array:
        return (x.astype(jnp.float32) * self.std[...] + self.mean[...]).astype(x.dtype)


def scales(kind: str, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) [D] of `kind` from per-channel statistics."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    if kind == "global":
        std = np.full_like(std, np.sqrt(np.mean(np.square(std))))  # the RMS of the centred latents
    elif kind != "channel":
        raise ValueError(f"latent_norm={kind!r} has no statistics")
    return mean, np.maximum(std, MIN_STD)
