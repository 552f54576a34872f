"""Learnable speaker encoder: reference audio of any length -> one speaker vector, no transcript.

  wav ─log-mel─▶ (x + 5) / 3 ─conv─▶ transformer (non-causal, padding masked)
      ─▶ attentive statistics pooling (weighted mean ‖ weighted std over valid frames) ─dense─▶ v

Trained jointly with the AR transformer (MiniMax-Speech), not a frozen verification model.
Padded frames are zeroed before the convolution, never attended to and get zero pooling weight, so
the vector does not depend on how much padding the reference has.
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.audio.mel import MelSpec, frame_lengths, log_mel
from speech_jax.layers import Conv1d, Transformer, dense

_NEG = -1e30
MEL_MEAN, MEL_STD = -5.0, 3.0  # fixed log-mel normalisation


def reference_mel(audio: jax.Array, audio_len: jax.Array, spec: MelSpec):
    """Audio [B, T] (zero padded) -> normalised log-mel [B, F, n_mels] (fp32, 0 on padding), mask [B, F]."""
    mel = (log_mel(audio, spec) - MEL_MEAN) / MEL_STD
    mask = jnp.arange(mel.shape[1])[None] < frame_lengths(audio_len, spec)[:, None]
    return jnp.where(mask[..., None], mel, 0.0), mask


def masked_mean_std(x: jax.Array, weights: jax.Array, eps: float = 1e-5) -> jax.Array:
    """x [B, F, C], weights [B, F] summing to 1 over valid frames -> [B, 2C] = mean ‖ std (fp32)."""
    x = x.astype(jnp.float32)
    w = weights.astype(jnp.float32)[..., None]
    mean = jnp.sum(w * x, axis=1)
    var = jnp.sum(w * x * x, axis=1) - mean * mean
    return jnp.concatenate([mean, jnp.sqrt(jnp.maximum(var, eps))], axis=-1)


def mel_statistics(audio: jax.Array, audio_len: jax.Array, spec: MelSpec) -> jax.Array:
    """The parameter-free "fixed" speaker embedding: per-channel mean and std of the reference's
    normalised log-mel over its valid frames, [B, 2 * n_mels]."""
    mel, mask = reference_mel(audio, audio_len, spec)
    m = mask.astype(jnp.float32)
    return masked_mean_std(mel, m / jnp.maximum(m.sum(1, keepdims=True), 1.0))


class SpeakerEncoder(nnx.Module):
    """Reads cfg.spk_d_model, spk_layers, spk_heads, spk_mlp_dim, spk_dim, attention_impl, dtype."""

    def __init__(self, cfg: ml_collections.ConfigDict, spec: MelSpec, *, rngs: nnx.Rngs):
        d, dtype = cfg.spk_d_model, jnp.dtype(cfg.dtype)
        self.conv_in = Conv1d(spec.n_mels, d, 3, dtype=dtype, rngs=rngs)
        self.encoder = Transformer(cfg.spk_layers, d, cfg.spk_heads, cfg.spk_heads, cfg.spk_mlp_dim,
                                   rope_theta=cfg.get("rope_theta", 10000.0), impl=cfg.attention_impl,
                                   dtype=dtype, rngs=rngs)
        # Attentive statistics pooling: a one-hidden-layer scorer gives each frame a weight.
        self.pool_hidden = dense(rngs, d, d, ("embed", "mlp"), dtype=dtype, use_bias=True)
        self.pool_score = dense(rngs, d, 1, ("mlp", None), dtype=dtype)
        self.out = dense(rngs, 2 * d, cfg.spk_dim, (None, None), dtype=dtype, use_bias=True)
        self.spec = spec

    def __call__(self, audio: jax.Array, audio_len: jax.Array) -> jax.Array:
        """Reference audio [B, T] (zero padded) and its lengths [B] in samples -> [B, spk_dim] fp32."""
        mel, mask = reference_mel(audio, audio_len, self.spec)
        x = jax.nn.silu(self.conv_in(mel))
        h = self.encoder(jnp.where(mask[..., None], x, 0.0), mask)
        scores = self.pool_score(jnp.tanh(self.pool_hidden(h)))[..., 0].astype(jnp.float32)
        weights = jax.nn.softmax(jnp.where(mask, scores, _NEG), axis=1) * mask
        return self.out(masked_mean_std(h, weights)).astype(jnp.float32)


def speaker_encoder_flops(cfg: ml_collections.ConfigDict, spec: MelSpec, frames: int) -> float:
    """Forward FLOPs of one reference of `frames` mel frames: its bidirectional transformer (the whole
    attention square) and the input convolution; pooling is negligible."""
    d = cfg.spk_d_model
    per_frame = 2 * d * d * 4 + 2 * 2 * frames * d + 2 * 3 * d * cfg.spk_mlp_dim
    return float(frames * (cfg.spk_layers * per_frame + 2 * 3 * spec.n_mels * d))
