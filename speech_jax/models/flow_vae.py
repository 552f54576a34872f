"""MiniMax-Speech Flow-VAE: a VAE on raw waveform whose decoder is the vocoder, with a normalizing flow
between the posterior and the N(0, I) prior.

  wav ─▶ encoder ─▶ mean, log σ   (50 Hz, latent_dim)
  z = mean + σ·ε ─┬─▶ decoder ─▶ wav_hat (hop · F samples)
                  └─▶ flow f (affine couplings) ─▶ u ~ N(0, I):  KL ≈ Σ[−log σ − ½ + ½ u²] − log|det ∂f/∂z|

Encoder and decoder are chosen by config: the DAC design (Snake convs at every rate, strides 2·4·5·8 = hop;
transposed convs back to the sample rate, tanh), or the frame-rate design of `models/vocos.py` (ConvNeXt on
the log-mel; ConvNeXt predicting STFT frames rendered by an inverse STFT).

The decoder and flow matching work on z (before the flow); the flow exists only to shape the KL.
Padded samples/frames are zeroed before every convolution that could carry them into valid positions,
so an utterance's valid outputs do not depend on how much padding its batch has. The flow and the KL
run in fp32; the convolutions in `cfg.dtype`.
"""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.layers import Conv1d, ConvTranspose1d
from speech_jax.layers.conv2d import polyphase_conv
from speech_jax.layers.snake import Snake
from speech_jax.models import vocos
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")
# Coupling log-scales are soft-clamped to (−LOG_SCALE_CLAMP, LOG_SCALE_CLAMP) for stability.
LOG_SCALE_CLAMP = 3.0
RESIDUAL_INIT_SCALE = 0.1


def _masked(x, mask):
    return x if mask is None else x * mask[..., None].astype(x.dtype)


def _length_mask(n_valid, length: int):
    """[B] valid counts -> [B, length] bool (None passes through: no masking)."""
    return None if n_valid is None else jnp.arange(length)[None] < n_valid[:, None]


def latent_spread(mean: jax.Array, frame_mask: jax.Array, axes=(0, 1)) -> jax.Array:
    """Each channel's standard deviation of `mean` [B, F, D] over the valid frames, reduced over `axes`
    ((0, 1): the batch, (1,): each utterance) and kept as broadcastable size-1 dimensions."""
    m = frame_mask[..., None].astype(jnp.float32)
    n = jnp.maximum(jnp.sum(m, axis=axes, keepdims=True), 1.0)
    centre = jnp.sum(m * mean, axis=axes, keepdims=True) / n
    return jnp.sqrt(jnp.sum(m * (mean - centre) ** 2, axis=axes, keepdims=True) / n)


def _flip_odd(i: int, x):
    """The channel flip between couplings: odd couplings see the channels reversed, and the order is
    restored after them, so the flow permutes nothing overall (padding frames pass through exactly,
    and the flow at init is exactly the identity)."""
    return jnp.flip(x, axis=-1) if i % 2 else x


class DownsampleConv1d(Conv1d):
    """Conv1d with a stride, computed in polyphase form (space-to-depth, then a stride-1 conv; see
    `layers/conv2d.py`): the same parameters and outputs, but a gradient of stride-1 convolutions where
    the direct form's is an input-dilated convolution, slow on XLA:CPU."""

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...].astype(self.dtype)[:, None]  # [k, 1, in, out]
        y = polyphase_conv(x.astype(self.dtype)[:, :, None], kernel, (self.stride, 1),
                           (self.padding, (0, 0)))[:, :, 0]
        return y + self.bias[...].astype(self.dtype)


def subpixel_taps(kernel_size: int, stride: int, padding: int) -> tuple[int, np.ndarray]:
    """For the sub-pixel form of a transposed conv: (left padding, index [taps, stride] into the kernel,
    `kernel_size` where the tap is empty). Output sample m·s + r of the transposed conv is
    Σ_j W[j·s + r + p] · x[m − j]; tap u of the stride-1 conv reads x[m − left + u], i.e. j = left − u."""
    j_hi = (kernel_size - 1 - padding) // stride
    j_lo = -((stride - 1 + padding) // stride)
    idx = np.array([[(j_hi - u) * stride + r + padding for r in range(stride)]
                    for u in range(j_hi - j_lo + 1)])
    return j_hi, np.where((idx >= 0) & (idx < kernel_size), idx, kernel_size)


class SubPixelConvTranspose1d(ConvTranspose1d):
    """ConvTranspose1d's first T·stride output samples, computed as a stride-1 conv producing
    stride × out channels, reshaped to stride × the length (sub-pixel / depth-to-space). Mathematically
    the transposed conv with its kernel reorganised (same parameters); it avoids the input-dilated
    convolutions (forward and gradient) that XLA:CPU runs several times slower than the useful work."""

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        left, idx = subpixel_taps(self.kernel_size, self.stride, self.padding)
        w = self.kernel[...].astype(self.dtype)
        w = jnp.concatenate([w, jnp.zeros_like(w[:1])])[idx]  # [taps, s, in, out]
        taps, s, d_in, d_out = w.shape
        w = w.transpose(0, 2, 1, 3).reshape(taps, d_in, s * d_out)
        y = jax.lax.conv_general_dilated(x.astype(self.dtype), w, (1,), [(left, taps - 1 - left)],
                                         dimension_numbers=("NWC", "WIO", "NWC"))
        return y.reshape(b, t * s, d_out) + self.bias[...].astype(self.dtype)


class ResidualUnit(nnx.Module):
    """Snake → dilated conv k → Snake → conv 1, added to the input (DAC)."""

    def __init__(self, ch: int, kernel_size: int, dilation: int, *, dtype, rngs: nnx.Rngs):
        self.act1, self.act2 = Snake(ch, rngs=rngs), Snake(ch, rngs=rngs)
        self.conv1 = Conv1d(ch, ch, kernel_size, dilation=dilation, dtype=dtype, rngs=rngs)
        self.conv2 = Conv1d(ch, ch, 1, dtype=dtype, rngs=rngs)
        # A small residual branch at init keeps the deep stack near identity (lecun-initialised
        # branches at full scale grow activations ~100x over 12 units and saturate the output tanh).
        self.conv2.kernel[...] = RESIDUAL_INIT_SCALE * self.conv2.kernel[...]

    def __call__(self, x, mask=None):
        x = _masked(x, mask)
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class EncoderBlock(nnx.Module):
    """Residual units at `dilations`, then Snake + strided conv (kernel 2s, stride s), channels ×2."""

    def __init__(self, ch: int, stride: int, dilations, kernel_size: int, *, dtype, rngs: nnx.Rngs):
        self.res = nnx.List([ResidualUnit(ch, kernel_size, d, dtype=dtype, rngs=rngs) for d in dilations])
        self.act = Snake(ch, rngs=rngs)
        self.down = DownsampleConv1d(ch, 2 * ch, 2 * stride, stride=stride, dtype=dtype, rngs=rngs)

    def __call__(self, x, mask=None):
        for unit in self.res:
            x = unit(x, mask)
        return self.down(_masked(self.act(x), mask))


class DecoderBlock(nnx.Module):
    """Snake + transposed conv (kernel 2s, stride s), channels ÷2, then residual units."""

    def __init__(self, ch: int, stride: int, dilations, kernel_size: int, *, dtype, rngs: nnx.Rngs):
        self.act = Snake(ch, rngs=rngs)
        # Padding s // 2 gives T·s + (s mod 2) samples, of which the first T·s are computed.
        self.up = SubPixelConvTranspose1d(ch, ch // 2, 2 * stride, stride=stride, padding=stride // 2,
                                          dtype=dtype, rngs=rngs)
        self.res = nnx.List([ResidualUnit(ch // 2, kernel_size, d, dtype=dtype, rngs=rngs)
                             for d in dilations])
        self.stride = stride

    def __call__(self, x, mask=None, out_mask=None):
        x = self.up(_masked(self.act(x), mask))
        for unit in self.res:
            x = unit(x, out_mask)
        return x


class AffineCoupling(nnx.Module):
    """x = [a, b] → [a, b·exp(s(a)) + t(a)]; the conv net reading `a` ends in a zero-initialised layer,
    so the coupling starts as the identity. fp32."""

    def __init__(self, dim: int, hidden: int, kernel_size: int, *, rngs: nnx.Rngs):
        self.split = dim // 2
        self.inp = Conv1d(self.split, hidden, kernel_size, rngs=rngs)
        self.out = Conv1d(hidden, 2 * (dim - self.split), 1, rngs=rngs)
        self.out.kernel[...] = jnp.zeros_like(self.out.kernel[...])

    def _shift_log_scale(self, a, mask):
        h = self.out(_masked(jax.nn.silu(self.inp(_masked(a, mask))), mask))
        shift, raw = jnp.split(h, 2, axis=-1)
        log_scale = LOG_SCALE_CLAMP * jnp.tanh(raw / LOG_SCALE_CLAMP)
        keep = mask[..., None]  # padding frames pass through: shift 0, log-scale 0
        return jnp.where(keep, shift, 0.0), jnp.where(keep, log_scale, 0.0)

    def __call__(self, x, mask):
        a, b = x[..., :self.split], x[..., self.split:]
        shift, log_scale = self._shift_log_scale(a, mask)
        y = jnp.concatenate([a, b * jnp.exp(log_scale) + shift], axis=-1)
        return y, jnp.sum(log_scale, axis=(1, 2))

    def inverse(self, y, mask):
        a, b = y[..., :self.split], y[..., self.split:]
        shift, log_scale = self._shift_log_scale(a, mask)
        return jnp.concatenate([a, (b - shift) * jnp.exp(-log_scale)], axis=-1)


class WaveEncoder(nnx.Module):
    """DAC encoder: waveform -> (mean, log σ) at sample_rate / hop, Snake convs at every rate."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, dtype, rngs: nnx.Rngs):
        strides, dil, k = tuple(cfg.strides), tuple(cfg.residual_dilations), cfg.kernel_size
        ch = cfg.channels
        self.enc_in = Conv1d(1, ch, k, dtype=dtype, rngs=rngs)
        blocks = []
        for s in strides:
            blocks.append(EncoderBlock(ch, s, dil, k, dtype=dtype, rngs=rngs))
            ch *= 2
        self.enc_blocks = nnx.List(blocks)
        self.enc_act = Snake(ch, rngs=rngs)
        self.enc_out = Conv1d(ch, 2 * cfg.latent_dim, 3, dtype=dtype, rngs=rngs)
        self.strides, self.dtype = strides, dtype

    def __call__(self, wav, wav_len):
        # Samples/positions at each rate are valid while they hold any valid sample (ceil).
        factor, mask = 1, _length_mask(wav_len, wav.shape[1])
        x = self.enc_in(_masked(wav[..., None].astype(self.dtype), mask))
        for s, block in zip(self.strides, self.enc_blocks):
            x = block(x, mask)
            factor *= s
            mask = _length_mask(-(-wav_len // factor), x.shape[1])
            x = constrain(x, ACT)
        return self.enc_out(_masked(self.enc_act(x), mask))


class WaveDecoder(nnx.Module):
    """DAC decoder: z -> waveform by transposed convs, channels halved at every upsampling, tanh out."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, dtype, rngs: nnx.Rngs):
        strides, dil, k = tuple(cfg.strides), tuple(cfg.residual_dilations), cfg.kernel_size
        ch = cfg.decoder_channels
        if ch % 2 ** len(strides):
            raise ValueError(f"decoder_channels {ch} must be divisible by 2^{len(strides)}")
        self.dec_in = Conv1d(cfg.latent_dim, ch, k, dtype=dtype, rngs=rngs)
        blocks = []
        for s in reversed(strides):
            blocks.append(DecoderBlock(ch, s, dil, k, dtype=dtype, rngs=rngs))
            ch //= 2
        self.dec_blocks = nnx.List(blocks)
        self.dec_act = Snake(ch, rngs=rngs)
        self.dec_out = Conv1d(ch, 1, k, dtype=dtype, rngs=rngs)
        self.strides, self.dtype = strides, dtype

    def __call__(self, z, frame_mask=None):
        n_valid = None if frame_mask is None else jnp.sum(frame_mask, axis=1)
        mask = _length_mask(n_valid, z.shape[1])
        x = self.dec_in(_masked(z.astype(self.dtype), mask))
        factor = 1
        for s, block in zip(reversed(self.strides), self.dec_blocks):
            factor *= s
            out_mask = _length_mask(None if n_valid is None else n_valid * factor, x.shape[1] * s)
            x = constrain(block(x, mask, out_mask), ACT)
            mask = out_mask
        y = self.dec_out(_masked(self.dec_act(x), mask))
        return jnp.tanh(y[..., 0].astype(jnp.float32))


ENCODERS = ("wave", "mel")     # DAC convs on the waveform | ConvNeXt on its log-mel (models/vocos.py)
DECODERS = ("wave", "istft")   # DAC transposed convs | ConvNeXt predicting an STFT (models/vocos.py)


class FlowVAE(nnx.Module):
    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.hop, self.latent_dim = math.prod(cfg.strides), int(cfg.latent_dim)
        self.use_flow = bool(cfg.use_flow)
        floor = float(cfg.get("min_latent_std", 0.0))
        if not 0 <= floor < math.exp(4.0):
            raise ValueError(f"model.min_latent_std must be in [0, e^4), got {floor}")
        self.min_log_std = math.log(floor) if floor > 0 else -9.0  # -9: the clip below
        self.min_std_ratio = float(cfg.get("min_latent_std_ratio", 0.0))
        if not 0 <= self.min_std_ratio <= 1:
            raise ValueError(f"model.min_latent_std_ratio must be in [0, 1], got {self.min_std_ratio}")
        encoder, decoder = cfg.get("encoder", "wave"), cfg.get("decoder", "wave")
        if encoder not in ENCODERS or decoder not in DECODERS:
            raise ValueError(f"model.encoder must be one of {ENCODERS} and model.decoder one of {DECODERS}, "
                             f"got {encoder!r} and {decoder!r}")
        self.encoder = (WaveEncoder(cfg, dtype=dtype, rngs=rngs) if encoder == "wave"
                        else vocos.MelEncoder(cfg, self.hop, dtype=dtype, rngs=rngs))
        self.decoder = (WaveDecoder(cfg, dtype=dtype, rngs=rngs) if decoder == "wave"
                        else vocos.ISTFTDecoder(cfg, self.hop, dtype=dtype, rngs=rngs))
        # Normalizing flow (training only): affine couplings with channel flips between them.
        if self.use_flow and self.latent_dim < 2:
            raise ValueError("the flow needs latent_dim >= 2")
        self.couplings = nnx.List(
            [AffineCoupling(self.latent_dim, cfg.flow_hidden, cfg.flow_kernel, rngs=rngs)
             for _ in range(cfg.flow_layers)] if self.use_flow else [])
        self.dtype = dtype

    # --- encoder / decoder --------------------------------------------------------------------

    def encode(self, wav: jax.Array, wav_len: jax.Array):
        """wav [B, T] (zero padded), wav_len [B] -> mean, log_std [B, F, D] fp32, frame_mask [B, F],
        F = T // hop (a trailing partial frame is truncated)."""
        num_frames = wav.shape[1] // self.hop
        wav = wav[:, :num_frames * self.hop]
        frame_mask = _length_mask(wav_len // self.hop, num_frames)
        h = self.encoder(wav, wav_len)
        mean, log_std = jnp.split(h.astype(jnp.float32), 2, axis=-1)
        # σ in [e^-9, e^4]: exp(2·log σ) in the KL cannot overflow early in training; the floor (when
        # set) is what sampling and the KL both see.
        return mean, jnp.clip(log_std, self.min_log_std, 4.0), frame_mask

    def decode(self, z: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
        """z [B, F, D] -> wav [B, F·hop] fp32. With `frame_mask`, padding frames are zeroed so valid
        samples do not depend on them (training); without, every frame is decoded."""
        return self.decoder(z, frame_mask)

    # --- posterior, flow and KL (fp32) --------------------------------------------------------

    @staticmethod
    def sample_latent(mean: jax.Array, log_std: jax.Array, rng: jax.Array) -> jax.Array:
        """z = mean + exp(log σ)·ε, ε ~ N(0, I)."""
        eps = jax.random.normal(rng, mean.shape, jnp.float32)
        return mean.astype(jnp.float32) + jnp.exp(log_std.astype(jnp.float32)) * eps

    def flow(self, z: jax.Array, frame_mask: jax.Array):
        """z [B, F, D] -> (u = f(z), log|det ∂f/∂z| [B]); padding frames pass through, adding 0."""
        x = z.astype(jnp.float32)
        logdet = jnp.zeros(z.shape[0], jnp.float32)
        for i, coupling in enumerate(self.couplings):
            x, ld = coupling(_flip_odd(i, x), frame_mask)
            x = _flip_odd(i, x)
            logdet = logdet + ld
        return x, logdet

    def flow_inverse(self, u: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """Exact inverse of `flow`: u -> z."""
        x = u.astype(jnp.float32)
        for i, coupling in reversed(list(enumerate(self.couplings))):
            x = _flip_odd(i, coupling.inverse(_flip_odd(i, x), frame_mask))
        return x

    def kl(self, mean: jax.Array, log_std: jax.Array, z: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """KL(q(z|x) ‖ prior) in nats per valid frame (summed over channels), fp32.

        With the flow: the single-sample estimate Σ mask·[−log σ − ½ + ½ f(z)²] − Σ log|det ∂f/∂z|;
        without: the analytic Σ mask·[½(μ² + σ² − 1) − log σ] against N(0, I).
        """
        mean, log_std = mean.astype(jnp.float32), log_std.astype(jnp.float32)
        m = frame_mask[..., None].astype(jnp.float32)
        frames = jnp.maximum(jnp.sum(frame_mask), 1).astype(jnp.float32)
        if not self.use_flow:
            per = 0.5 * (mean ** 2 + jnp.exp(2.0 * log_std) - 1.0) - log_std
            return jnp.sum(m * per) / frames
        u, logdet = self.flow(z, frame_mask)
        per = -log_std - 0.5 + 0.5 * u ** 2
        return (jnp.sum(m * per) - jnp.sum(logdet)) / frames

    def relative_std_floor(self, mean: jax.Array, log_std: jax.Array, frame_mask: jax.Array) -> jax.Array:
        """log σ floored at `min_latent_std_ratio` × each channel's spread of the means over the batch's
        valid frames. The spread carries no gradient, so the encoder cannot escape the floor by scaling its
        latents up (as it does an absolute `min_latent_std`)."""
        if not self.min_std_ratio:
            return log_std
        spread = jax.lax.stop_gradient(latent_spread(mean, frame_mask, axes=(0, 1)))
        return jnp.maximum(log_std, jnp.log(self.min_std_ratio * spread + 1e-6))

    def __call__(self, wav: jax.Array, wav_len: jax.Array, rng: jax.Array) -> dict:
        """Training forward: encode, sample z, decode (padding frames masked), KL."""
        mean, log_std, frame_mask = self.encode(wav, wav_len)
        log_std = self.relative_std_floor(mean, log_std, frame_mask)
        z = self.sample_latent(mean, log_std, rng)
        return dict(wav_hat=self.decode(z, frame_mask), mean=mean, log_std=log_std, z=z,
                    frame_mask=frame_mask, kl=self.kl(mean, log_std, z, frame_mask))
