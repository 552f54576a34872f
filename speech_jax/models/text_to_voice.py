"""Text-to-voice (T2V): a description's words -> a speaker condition vector v, by flow matching.

  description ids ─embed─▶ transformer (non-causal) ─masked mean─▶ c          (empty description: c_null)
  x_t = (1 − t)·noise + t·z,  z = (v − mean) / std  ─▶  MLP(x_t, t, c) ≈ z − noise

One description fits many voices (a "fast female voice" is any of several corpus speakers, and every
utterance of one speaker gives a slightly different v), so T2V samples from p(v | description) rather
than regressing its mean: different seeds give different voices of the same description. `mean` and `std`
(per dimension, over training utterances) are statistics of the speaker space, fixed when training starts.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.infer import ode
from speech_jax.layers import Transformer, dense, param


class SpeakerStatistic(nnx.Variable):
    """A fixed statistic of the speaker-vector space (not trained, saved with the model)."""


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """t [B] in [0, 1] -> sinusoidal features [B, dim]."""
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(dim // 2) / (dim // 2))
    angles = 1000.0 * t[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class DescriptionEncoder(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, vocab_size: int, *, rngs: nnx.Rngs):
        d = cfg.desc_d_model
        self.embed = param(rngs, nnx.initializers.normal(0.02), (vocab_size, d), ("vocab", "embed"))
        self.encoder = Transformer(cfg.desc_layers, d, cfg.desc_heads, cfg.desc_heads, cfg.desc_mlp_dim, rngs=rngs)
        self.null = param(rngs, nnx.initializers.normal(0.02), (d,), ("embed",))

    def __call__(self, ids: jax.Array, lengths: jax.Array) -> jax.Array:
        """ids [B, L] (0-padded), lengths [B] -> c [B, d]; a description with no words gives `null`."""
        mask = jnp.arange(ids.shape[1])[None] < lengths[:, None]
        h = self.encoder(self.embed[...][ids], mask)
        pooled = jnp.sum(jnp.where(mask[..., None], h, 0.0), 1) / jnp.maximum(lengths, 1)[:, None]
        return jnp.where((lengths > 0)[:, None], pooled, self.null[...][None])


class VelocityMLP(nnx.Module):
    """u(x_t, t, c): residual MLP blocks, each told t and c."""

    def __init__(self, cfg: ml_collections.ConfigDict, spk_dim: int, *, rngs: nnx.Rngs):
        h, d = cfg.flow_hidden, cfg.desc_d_model
        self.t_dim = cfg.time_dim
        self.x_in = dense(rngs, spk_dim, h, (None, "mlp"), use_bias=True)
        self.cond = dense(rngs, d + cfg.time_dim, h, (None, "mlp"), use_bias=True)
        self.norms = nnx.List([nnx.LayerNorm(h, rngs=rngs) for _ in range(cfg.flow_layers)])
        self.ups = nnx.List([dense(rngs, h, 2 * h, ("mlp", None), use_bias=True) for _ in range(cfg.flow_layers)])
        self.downs = nnx.List([dense(rngs, 2 * h, h, (None, "mlp"), use_bias=True) for _ in range(cfg.flow_layers)])
        self.out = dense(rngs, h, spk_dim, ("mlp", None), use_bias=True, init=nnx.initializers.zeros_init())

    def __call__(self, x: jax.Array, t: jax.Array, c: jax.Array) -> jax.Array:
        cond = self.cond(jnp.concatenate([c, timestep_embedding(t, self.t_dim)], -1))
        h = self.x_in(x) + cond
        for norm, up, down in zip(self.norms, self.ups, self.downs):
            h = h + down(jax.nn.silu(up(norm(h) + cond)))
        return self.out(h)


class TextToVoice(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, spk_dim: int, vocab_size: int, *, rngs: nnx.Rngs):
        self.describe = DescriptionEncoder(cfg, vocab_size, rngs=rngs)
        self.velocity = VelocityMLP(cfg, spk_dim, rngs=rngs)
        self.mean = SpeakerStatistic(jnp.zeros((spk_dim,), jnp.float32))
        self.std = SpeakerStatistic(jnp.ones((spk_dim,), jnp.float32))
        self.cond_dropout = cfg.cond_dropout

    def loss(self, v: jax.Array, ids: jax.Array, lengths: jax.Array, rng: jax.Array) -> jax.Array:
        """The conditional flow-matching loss [B] of speaker vectors v [B, spk_dim] given descriptions;
        a `cond_dropout` share of them trains unconditionally (the null description) for guidance."""
        k_drop, k_t, k_noise = jax.random.split(rng, 3)
        drop = jax.random.uniform(k_drop, lengths.shape) < self.cond_dropout
        c = self.describe(ids, jnp.where(drop, 0, lengths))
        z = (v - self.mean[...]) / self.std[...]
        t = jax.random.uniform(k_t, lengths.shape)
        noise = jax.random.normal(k_noise, z.shape)
        x_t = (1 - t[:, None]) * noise + t[:, None] * z
        return jnp.mean(jnp.square(self.velocity(x_t, t, c) - (z - noise)), -1)

    def sample(self, ids: jax.Array, lengths: jax.Array, key: jax.Array, *, steps: int = 32,
               guidance: float = 0.0) -> jax.Array:
        """Speaker vectors [B, spk_dim] for the descriptions: the ODE from noise (`key`) with `steps`
        midpoint steps; `guidance` w > 0 weighs the description more (classifier-free guidance)."""
        c, c_null = self.describe(ids, lengths), self.describe(ids, jnp.zeros_like(lengths))

        def velocity(x, t):
            x = x[:, 0]
            u = self.velocity(x, t, c)
            if guidance:
                u = ode.cfg_velocity(u, self.velocity(x, t, c_null), guidance)
            return u[:, None]

        noise = jax.random.normal(key, (ids.shape[0], 1, self.mean.shape[0]))
        z = ode.solve(velocity, noise, ode.time_grid(steps), method="midpoint")[:, 0]
        return z * self.std[...] + self.mean[...]
