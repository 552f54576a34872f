"""GAN discriminators for the Flow-VAE decoder (DAC / BigVGAN-v2 recipe; the paper is silent).

- Multi-period (HiFi-GAN): the waveform folded into [T/p, p] planes, 2-D convs along time only, so
  each sub-discriminator sees one phase of period p.
- Multi-resolution, multi-band complex STFT (DAC): real and imaginary STFT parts as two channels over
  (time, frequency); frequency bands get their own conv stacks, joined along frequency for the last conv.

Every sub-discriminator returns a logit map and its intermediate feature maps (for feature matching).
The STFT is fp32; convolutions run in the compute dtype; logits come back fp32.
"""
import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from speech_jax.audio.mel import MelSpec, stft
from speech_jax.layers.conv2d import Conv2d

SLOPE = 0.1  # leaky ReLU


def _lrelu(x):
    return jax.nn.leaky_relu(x, SLOPE)


class PeriodDiscriminator(nnx.Module):
    """HiFi-GAN DiscriminatorP: kernel (5, 1) stride (3, 1) convs with widths c·(1, 4, 16, 32), capped."""

    def __init__(self, period: int, channels: int, *, max_channels: int = 1024, dtype, rngs: nnx.Rngs):
        widths = [min(channels * m, max_channels) for m in (1, 4, 16, 32)]
        convs, d_in = [], 1
        for w in widths:
            convs.append(Conv2d(d_in, w, (5, 1), stride=(3, 1), dtype=dtype, rngs=rngs))
            d_in = w
        convs.append(Conv2d(d_in, d_in, (5, 1), dtype=dtype, rngs=rngs))
        self.convs = nnx.List(convs)
        self.post = Conv2d(d_in, 1, (3, 1), dtype=dtype, rngs=rngs)
        self.period = period

    def __call__(self, wav: jax.Array):
        b, t = wav.shape
        p = self.period
        if t % p:
            wav = jnp.pad(wav, ((0, 0), (0, p - t % p)), mode="reflect")
        # The [T/p, p] plane, laid out as p phases of one column each ([B·p, T/p, 1, C]): the (k, 1) kernels
        # never mix phases, and the time-strided convolutions' space-to-depth fold is a free reshape.
        x = wav.reshape(b, -1, p).transpose(0, 2, 1).reshape(b * p, -1, 1, 1)
        feats = []
        for conv in self.convs:
            x = _lrelu(conv(x))
            feats.append(x.reshape(b, p, *x.shape[1:]))  # [B, p, T', 1, C]
        logits = self.post(x)[..., 0, 0].astype(jnp.float32)
        return logits.reshape(b, p, -1).transpose(0, 2, 1), feats  # [B, T', p]


class MultiPeriodDiscriminator(nnx.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), channels: int = 32, *, max_channels: int = 1024,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        self.discs = nnx.List([PeriodDiscriminator(p, channels, max_channels=max_channels, dtype=dtype,
                                                   rngs=rngs) for p in periods])

    def __call__(self, wav: jax.Array):
        outs = [d(wav) for d in self.discs]
        return [o[0] for o in outs], [o[1] for o in outs]


def complex_stft(wav: jax.Array, n_fft: int) -> jax.Array:
    """[B, T] -> [B, T // hop, n_fft // 2 + 1, 2] (real, imag), hop n_fft / 4, periodic Hann, centred
    zero-padded frames; fp32."""
    if n_fft % 4:
        raise ValueError(f"n_fft {n_fft} must be a multiple of 4")
    spec = stft(wav, MelSpec(n_fft=n_fft, hop_length=n_fft // 4, win_length=n_fft))
    return jnp.stack([jnp.real(spec), jnp.imag(spec)], axis=-1)


class STFTDiscriminator(nnx.Module):
    """One resolution of DAC's MRD: per band, conv (3, 9) then three (3, 9) convs striding frequency by 2
    and a (3, 3) conv; bands joined along frequency; a (3, 3) conv to one logit channel."""

    def __init__(self, n_fft: int, channels: int, bands, *, dtype, rngs: nnx.Rngs):
        bins = n_fft // 2 + 1
        edges = [int(round(f * bins)) for f in bands]
        self.bands = tuple((lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo)
        if not self.bands or edges[0] != 0 or edges[-1] != bins:
            raise ValueError(f"band edges {bands} must rise from 0 to 1")

        def stack():
            return nnx.List([Conv2d(2, channels, (3, 9), dtype=dtype, rngs=rngs)]
                            + [Conv2d(channels, channels, (3, 9), stride=(1, 2), dtype=dtype, rngs=rngs)
                               for _ in range(3)]
                            + [Conv2d(channels, channels, (3, 3), dtype=dtype, rngs=rngs)])
        self.stacks = nnx.List([stack() for _ in self.bands])
        self.post = Conv2d(channels, 1, (3, 3), dtype=dtype, rngs=rngs)
        self.n_fft = n_fft

    def __call__(self, wav: jax.Array):
        spec = complex_stft(wav, self.n_fft)
        feats, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.stacks):
            x = spec[:, :, lo:hi]
            for conv in convs:
                x = _lrelu(conv(x))
                feats.append(x)
            outs.append(x)
        x = jnp.concatenate(outs, axis=2)
        return self.post(x)[..., 0].astype(jnp.float32), feats


class MultiResolutionSTFTDiscriminator(nnx.Module):
    def __init__(self, fft_sizes=(512, 1024, 2048), channels: int = 32,
                 bands=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0), *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.discs = nnx.List([STFTDiscriminator(n, channels, tuple(bands), dtype=dtype, rngs=rngs)
                               for n in fft_sizes])

    def __call__(self, wav: jax.Array):
        outs = [d(wav) for d in self.discs]
        return [o[0] for o in outs], [o[1] for o in outs]


class Discriminators(nnx.Module):
    """MPD + multi-band multi-resolution STFT discriminator, from config fields mpd_periods, mpd_channels,
    mpd_max_channels (optional, HiFi-GAN's 1024), stft_ffts, stft_channels, stft_bands, dtype."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        self.mpd = MultiPeriodDiscriminator(tuple(cfg.mpd_periods), cfg.mpd_channels,
                                            max_channels=int(cfg.get("mpd_max_channels", 1024)), dtype=dtype,
                                            rngs=rngs)
        self.mrsd = MultiResolutionSTFTDiscriminator(tuple(cfg.stft_ffts), cfg.stft_channels,
                                                     tuple(cfg.stft_bands), dtype=dtype, rngs=rngs)

    def __call__(self, wav: jax.Array):
        """wav [B, T] -> (logits: one fp32 map per sub-discriminator, features: their feature maps)."""
        logits_p, feats_p = self.mpd(wav)
        logits_s, feats_s = self.mrsd(wav)
        return logits_p + logits_s, feats_p + feats_s
