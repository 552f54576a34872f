"""A small CTC speech recogniser: the intelligibility judge of synthesised speech.

  log-mel (50 Hz) ─conv─▶ strided conv ×1/subsample (25 Hz) ─▶ transformer ─▶ CTC head over labels

Padded frames are zeroed before every convolution and never attended to, so an utterance's output does
not depend on how much padding its batch has (the judge pads each utterance to a length bucket).
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.audio.mel import MelSpec, frame_lengths, log_mel, utterance_normalise
from speech_jax.layers import Conv1d, Transformer, dense
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")


def _masked(x, mask):
    return x * mask[..., None].astype(x.dtype)


def frequency_warp(mel: jax.Array, rng: jax.Array, max_warp: float) -> jax.Array:
    """Vocal-tract-length-style warp: each utterance's mel axis stretched by a factor uniform in
    1 ± max_warp (linear interpolation between channels), as another voice's formants would be."""
    b, _, m = mel.shape
    alpha = jax.random.uniform(rng, (b, 1, 1), minval=1.0 - max_warp, maxval=1.0 + max_warp)
    pos = jnp.clip(jnp.arange(m)[None, None] * alpha, 0, m - 1)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, m - 1)
    frac = pos - lo
    take = lambda idx: jnp.take_along_axis(mel, jnp.broadcast_to(idx, mel.shape), axis=-1)  # noqa: E731
    return (1 - frac) * take(lo) + frac * take(hi)


def spec_augment(mel: jax.Array, rng: jax.Array, *, freq_masks: int, freq_width: int, time_masks: int,
                 time_width: int, fill: float) -> jax.Array:
    """SpecAugment without time warping: per utterance, bands of mel channels and spans of frames set to
    `fill` (the normalised mean), widths uniform in [0, width]."""
    b, t, m = mel.shape

    def masks(key, count, width, size):
        k_width, k_start = jax.random.split(key)
        w = jax.random.randint(k_width, (b, count, 1), 0, width + 1)
        start = jax.random.randint(k_start, (b, count, 1), 0, jnp.maximum(size - w, 1))
        pos = jnp.arange(size)[None, None]
        return jnp.any((pos >= start) & (pos < start + w), axis=1)  # [B, size]

    k_freq, k_time = jax.random.split(rng)
    hide = jnp.zeros((b, t, m), bool)
    if freq_masks:
        hide |= masks(k_freq, freq_masks, freq_width, m)[:, None, :]
    if time_masks:
        hide |= masks(k_time, time_masks, time_width, t)[:, :, None]
    return jnp.where(hide, fill, mel)


class CtcRecognizer(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, spec: MelSpec, vocab_size: int, *, rngs: nnx.Rngs):
        if cfg.subsample not in (1, 2):
            raise ValueError(f"model.subsample must be 1 (50 Hz) or 2 (25 Hz), got {cfg.subsample}")
        d, dtype = cfg.d_model, jnp.dtype(cfg.dtype)
        self.conv_in = Conv1d(spec.n_mels, d, cfg.conv_kernel, dtype=dtype, rngs=rngs)
        self.down = Conv1d(d, d, 2 * cfg.subsample, stride=cfg.subsample, dtype=dtype, rngs=rngs)
        self.encoder = Transformer(num_layers=cfg.num_layers, d_model=d, num_heads=cfg.num_heads,
                                   num_kv_heads=cfg.num_kv_heads, mlp_dim=cfg.mlp_dim, rope_theta=cfg.rope_theta,
                                   impl=cfg.attention_impl, dtype=dtype, rngs=rngs)
        self.head = dense(rngs, d, vocab_size, ("embed", "vocab"), dtype=dtype, use_bias=True)
        self.spec, self.subsample, self.vocab_size = spec, int(cfg.subsample), int(vocab_size)
        self.mel_mean, self.mel_std = float(cfg.mel_mean), float(cfg.mel_std)
        self.augment = {k: int(cfg[k]) for k in ("freq_masks", "freq_width", "time_masks", "time_width")}
        self.freq_warp = float(cfg.get("freq_warp", 0.0))  # absent from judges trained before it existed
        self.utterance_norm = bool(cfg.get("utterance_norm", False))  # likewise
        self.dtype = dtype

    def features(self, audio: jax.Array, audio_len: jax.Array):
        """Raw audio [B, T] -> normalised log-mel [B, F, n_mels] (fp32) and its frame mask [B, F]."""
        mel = (log_mel(audio, self.spec) - self.mel_mean) / self.mel_std
        frames = jnp.arange(mel.shape[1])[None] < frame_lengths(audio_len, self.spec)[:, None]
        if self.utterance_norm:  # each mel channel to zero mean, unit spread over the utterance: less voice
            mel = utterance_normalise(mel, frames)
        return mel, frames

    def __call__(self, mel: jax.Array, frame_mask: jax.Array, *, rng: jax.Array | None = None):
        """Normalised log-mel [B, F, M] -> (CTC logits [B, F/subsample, V] fp32, their mask).

        With `rng` (training) the mel is augmented first, as far as the config asks: warped, then masked."""
        if rng is not None:
            warp_rng, mask_rng = jax.random.split(rng)
            if self.freq_warp:
                mel = frequency_warp(mel, warp_rng, self.freq_warp)
            if self.augment["freq_masks"] or self.augment["time_masks"]:
                mel = spec_augment(mel, mask_rng, fill=0.0, **self.augment)
        out_mask = frame_mask[:, self.subsample - 1::self.subsample]  # valid iff all its frames are
        x = jax.nn.silu(self.conv_in(_masked(mel, frame_mask).astype(self.dtype)))
        x = self.down(_masked(x, frame_mask))
        x = constrain(x, ACT)
        x = self.encoder(x, out_mask)
        return self.head(x).astype(jnp.float32), out_mask
