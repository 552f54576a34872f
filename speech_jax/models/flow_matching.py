"""Latent flow matching: a DiT that predicts the OT-CFM velocity of Flow-VAE latents (50 Hz).

  tokens (25 Hz) ─embed─▶ token encoder ─▶ repeat ×2 ──┐
  x_t (noisy latent) ──────────────────────────────────┼─concat─▶ dense ─▶ DiT blocks ─▶ adaLN ─▶ dense ─▶ v
  prompt latent (zeros off the prompt), prompt mask ───┘                ▲ adaLN-zero
  t ─sinusoid─▶ MLP ─┐                                                  │
  speaker vector ─dense─┴─(+)─▶ c ────────────────────────────────────────┘

Each block: x + g₁·Attn(LN(x)·(1+s₁) + b₁), then x + g₂·SwiGLU(LN(x)·(1+s₂) + b₂), with (b, s, g)
from a zero-initialised dense on c, so every block starts as the identity; the output dense is
zero-initialised as well, so the untrained model predicts v = 0 whatever its inputs.

Classifier-free guidance: `drop[b]` zeroes ALL conditions of example b together (token features,
speaker vector, prompt latent and prompt mask). Zeros, not a learned null embedding: a dropped
example then carries no information from its conditions at all, and no extra parameters are needed.
The noisy latent x_t and the time t are never dropped.

The conditions do not change during ODE sampling, so they are computed once (`conditions`) and the
DiT runs once per solver evaluation (`velocity`); `__call__` does both.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.layers import Attention, SwiGLU, Transformer, attention_mask, dense, param
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")
TIME_FREQ_DIM = 256   # sinusoidal features of t, as in DiT
TIME_SCALE = 1000.0   # t in [0, 1] is scaled so that the sinusoid's frequencies resolve it
_ZEROS = nnx.initializers.zeros_init()


def timestep_embedding(t: jax.Array, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> jax.Array:
    """t [B] in [0, 1] -> [B, dim] sinusoidal features (fp32)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = (TIME_SCALE * t.astype(jnp.float32))[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """LayerNorm without affine parameters (adaLN supplies shift and scale); statistics in fp32."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class DiTBlock(nnx.Module):
    """Pre-norm transformer block whose norms are modulated by the conditioning vector (adaLN-zero)."""

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, mlp_dim: int, *,
                 rope_theta: float, impl: str, dtype, rngs: nnx.Rngs):
        self.attn = Attention(d_model, num_heads, num_kv_heads, rope_theta=rope_theta, impl=impl,
                              dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(d_model, mlp_dim, dtype=dtype, rngs=rngs)
        self.modulation = dense(rngs, d_model, 6 * d_model, ("embed", "mlp"), dtype=dtype, use_bias=True,
                                init=_ZEROS)

    def __call__(self, x, c, mask, positions, key_valid=None):
        """x [B,F,d]; c [B,d] (already SiLU'd); mask [B,F,F] bool; positions [F]; key_valid [B,F]: the
        mask is exactly these keys (for fused kernels)."""
        x = constrain(x, ACT)
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(self.modulation(c)[:, None], 6, axis=-1)
        x = x + gate1 * self.attn(modulate(layer_norm(x), shift1, scale1), mask, positions, key_valid=key_valid)
        x = x + gate2 * self.mlp(modulate(layer_norm(x), shift2, scale2))
        return constrain(x, ACT)


_REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep projections, redo attention
}


class FlowMatchingDiT(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        d, latent, dtype = cfg.d_model, cfg.latent_dim, jnp.dtype(cfg.dtype)
        if cfg.remat not in ("none", *_REMAT_POLICIES):
            raise ValueError(f"remat={cfg.remat!r}; use 'none', 'full' or 'dots'")
        block_kw = dict(d_model=d, num_heads=cfg.num_heads, num_kv_heads=cfg.num_kv_heads or cfg.num_heads,
                        mlp_dim=cfg.mlp_dim, rope_theta=cfg.rope_theta, impl=cfg.attention_impl, dtype=dtype)
        # Conditions.
        self.token_embed = param(rngs, nnx.initializers.normal(1.0), (cfg.codebook_size, d), ("vocab", "embed"))
        self.token_encoder = Transformer(cfg.token_encoder_layers, **block_kw, rngs=rngs)
        self.time_in = dense(rngs, TIME_FREQ_DIM, d, (None, "mlp"), dtype=dtype, use_bias=True)
        self.time_out = dense(rngs, d, d, ("mlp", "embed"), dtype=dtype, use_bias=True)
        self.spk_proj = dense(rngs, cfg.spk_dim, d, (None, "embed"), dtype=dtype)
        # Backbone: [x_t, token features, prompt latent, prompt mask] -> d_model.
        self.proj_in = dense(rngs, 2 * latent + d + 1, d, (None, "embed"), dtype=dtype, use_bias=True)
        if cfg.scan_layers:
            @nnx.split_rngs(splits=cfg.num_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
            def stacked(r):
                return DiTBlock(**block_kw, rngs=r)
            self.blocks = stacked(rngs)
        else:
            self.blocks = nnx.List([DiTBlock(**block_kw, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_modulation = dense(rngs, d, 2 * d, ("embed", "mlp"), dtype=dtype, use_bias=True, init=_ZEROS)
        self.proj_out = dense(rngs, d, latent, ("embed", None), dtype=dtype, use_bias=True, init=_ZEROS)
        self.scan_layers, self.remat, self.dtype = bool(cfg.scan_layers), cfg.remat, dtype

    # --- conditions (constant over an ODE solve) -----------------------------------------------

    def conditions(self, tokens, frame_mask, spk, prompt, prompt_mask, drop=None) -> dict:
        """Per-frame condition features and the speaker embedding; `drop[b]` zeroes all of example b's.

        tokens [B,F/2] int (token i covers frames 2i, 2i+1), frame_mask [B,F] bool, spk [B,S],
        prompt [B,F,D], prompt_mask [B,F] bool, drop [B] bool or None.
        -> {"frames": [B,F,d+D+1], "speaker": [B,d], "frame_mask": [B,F]}."""
        b, f = frame_mask.shape
        if tokens.shape[1] * 2 != f:
            raise ValueError(f"{tokens.shape[1]} tokens do not cover {f} latent frames (need F = 2 x tokens)")
        keep = jnp.ones((b,), bool) if drop is None else ~drop.astype(bool)
        # Token i is valid when both of its frames are (as the audio tokenizer counts them).
        token_mask = frame_mask[:, 1::2]
        h = jnp.take(self.token_embed[...], tokens, axis=0).astype(self.dtype)
        h = self.token_encoder(constrain(h, ACT), token_mask)
        h = jnp.repeat(h, 2, axis=1)                                           # 25 Hz -> 50 Hz
        pm = (prompt_mask.astype(bool) & keep[:, None])[..., None]
        frames = jnp.concatenate([
            h * keep[:, None, None].astype(h.dtype),
            jnp.where(pm, prompt, 0).astype(self.dtype),
            pm.astype(self.dtype)], axis=-1)
        speaker = self.spk_proj(jnp.where(keep[:, None], spk, 0).astype(self.dtype))
        return dict(frames=frames, speaker=speaker, frame_mask=frame_mask.astype(bool))

    # --- the DiT (one call per solver evaluation) ----------------------------------------------

    def _backbone(self, x, c, mask, positions, key_valid=None):
        """The block stack, as plain JAX over (graphdef, state) so the model can be called inside any
        JAX transform or loop (an NNX transform here would refuse variables from an outer trace)."""
        def run(block_def, block_state, h, c, mask, positions, key_valid):
            return nnx.merge(block_def, block_state)(h, c, mask, positions, key_valid)
        if self.remat != "none":
            run = jax.checkpoint(run, policy=_REMAT_POLICIES[self.remat], static_argnums=(0,))
        if self.scan_layers:
            # One block's graph, the stacked states sliced along the leading "layers" axis.
            block_def, stacked = nnx.split(self.blocks)
            x, _ = jax.lax.scan(lambda h, st: (run(block_def, st, h, c, mask, positions, key_valid), None),
                                x, stacked)
            return x
        for block in self.blocks:
            x = run(*nnx.split(block), x, c, mask, positions, key_valid)
        return x

    def velocity(self, x_t: jax.Array, t: jax.Array, cond: dict) -> jax.Array:
        """x_t [B,F,D], t [B] -> v [B,F,D] fp32 (zero on padded frames)."""
        frame_mask = cond["frame_mask"]
        f = x_t.shape[1]
        h = self.proj_in(jnp.concatenate([x_t.astype(self.dtype), cond["frames"].astype(self.dtype)], -1))
        temb = self.time_out(jax.nn.silu(self.time_in(timestep_embedding(t).astype(self.dtype))))
        c = jax.nn.silu(temb + cond["speaker"])
        mask = attention_mask(frame_mask, f, f)
        h = self._backbone(h, c, mask, jnp.arange(f), frame_mask)
        shift, scale = jnp.split(self.final_modulation(c)[:, None], 2, axis=-1)
        v = self.proj_out(modulate(layer_norm(h), shift, scale)).astype(jnp.float32)
        return v * frame_mask[..., None]

    def __call__(self, x_t, t, tokens, frame_mask, spk, prompt, prompt_mask, drop=None) -> jax.Array:
        """Velocity v [B,F,D] (fp32) of the noisy latent x_t [B,F,D] at time t [B]."""
        return self.velocity(x_t, t, self.conditions(tokens, frame_mask, spk, prompt, prompt_mask, drop))


def _transformer_flops(num_layers: int, cfg, seq: int) -> float:
    d, h, kv = cfg.d_model, cfg.num_heads, cfg.num_kv_heads or cfg.num_heads
    hd = d // h
    proj = 2 * seq * d * hd * (2 * h + 2 * kv)   # q, k, v, o
    attn = 2 * 2 * seq * seq * h * hd            # q·k and p·v
    mlp = 2 * seq * 3 * d * cfg.mlp_dim
    return num_layers * (proj + attn + mlp)


def flops_per_frame(cfg: ml_collections.ConfigDict, frames: int) -> float:
    """Forward matmul FLOPs per latent frame of one `frames`-long sequence (conditions included)."""
    d, latent = cfg.d_model, cfg.latent_dim
    per_sequence = (
        _transformer_flops(cfg.token_encoder_layers, cfg, frames // 2)   # token encoder at 25 Hz
        + 2 * frames * (2 * latent + d + 1) * d                          # proj_in
        + _transformer_flops(cfg.num_layers, cfg, frames)                # DiT blocks
        + 2 * frames * d * latent                                        # proj_out
        # once per sequence: time MLP, speaker projection, adaLN modulations
        + 2 * (TIME_FREQ_DIM * d + d * d + cfg.spk_dim * d + cfg.num_layers * d * 6 * d + d * 2 * d))
    return float(per_sequence / frames)
