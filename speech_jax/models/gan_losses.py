"""GAN and spectral losses for the Flow-VAE decoder (DAC recipe), pure functions, fp32.

Reductions follow DAC on the generator side (sums over sub-discriminators, feature maps and mel scales),
so DAC's weights (adversarial 1, feature matching 2, mel 15) keep its balance between the terms.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from speech_jax.audio.mel import MelSpec, mel_spectrogram, stft, stft_magnitude

# DAC's 7 mel scales: (window = n_fft, n_mels); hop = window / 4.
DAC_MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))
MEL_FLOOR = 1e-5


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def lsgan_discriminator_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]) -> jax.Array:
    """Mean over sub-discriminators of mean((1 − D(x))²) + mean(D(G(z))²); 0 at D(x) = 1, D(G(z)) = 0."""
    terms = [jnp.mean((1.0 - _f32(r)) ** 2) + jnp.mean(_f32(f) ** 2) for r, f in zip(real_logits, fake_logits)]
    return sum(terms) / len(terms)


def lsgan_generator_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
    """Sum over sub-discriminators of mean((1 − D(G(z)))²)."""
    return sum(jnp.mean((1.0 - _f32(f)) ** 2) for f in fake_logits)


def feature_matching_loss(real_feats: Sequence[Sequence[jax.Array]],
                          fake_feats: Sequence[Sequence[jax.Array]]) -> jax.Array:
    """Sum over sub-discriminators and their feature maps of mean |D_l(x) − D_l(G(z))|; the real maps are
    constants (stop-gradient), so only the generator is pulled."""
    total = jnp.zeros((), jnp.float32)
    for reals, fakes in zip(real_feats, fake_feats):
        for r, f in zip(reals, fakes):
            total = total + jnp.mean(jnp.abs(jax.lax.stop_gradient(_f32(r)) - _f32(f)))
    return total


def _masked(wav, mask):
    """fp32 audio with padding samples zeroed (`mask` [B, T] or None)."""
    return _f32(wav) if mask is None else _f32(wav) * _f32(mask)


def _frame_mask(mask, num_frames: int, hop: int):
    """[B, T] sample mask -> [B, F] (frame i is valid when its centre sample i·hop is)."""
    return _f32(mask)[:, ::hop][:, :num_frames]


def multiscale_mel_loss(wav: jax.Array, wav_hat: jax.Array, sample_rate: int, mask: jax.Array | None = None,
                        scales: Sequence[tuple[int, int]] = DAC_MEL_SCALES) -> jax.Array:
    """Sum over `scales` ((window, n_mels), hop window/4) of the mean L1 between log10 mel magnitudes
    (floored at 1e-5). `mask` [B, T]: padding samples are zeroed and frames centred in padding ignored."""
    wav, wav_hat = _masked(wav, mask), _masked(wav_hat, mask)
    total = jnp.zeros((), jnp.float32)
    for window, n_mels in scales:
        spec = MelSpec(sample_rate=int(sample_rate), n_fft=window, hop_length=window // 4, win_length=window,
                       n_mels=n_mels, power=1.0, log_floor=MEL_FLOOR)
        a = jnp.log10(jnp.maximum(mel_spectrogram(wav, spec), MEL_FLOOR))
        b = jnp.log10(jnp.maximum(mel_spectrogram(wav_hat, spec), MEL_FLOOR))
        diff = jnp.abs(a - b)
        if mask is None:
            total = total + jnp.mean(diff)
        else:
            fm = _frame_mask(mask, diff.shape[1], spec.hop_length)
            total = total + jnp.sum(diff * fm[..., None]) / jnp.maximum(jnp.sum(fm) * n_mels, 1.0)
    return total


def multiresolution_stft_distance(wav: jax.Array, wav_hat: jax.Array, fft_sizes: Sequence[int] = (512, 1024, 2048),
                                  mask: jax.Array | None = None) -> jax.Array:
    """The "MS-STFT" metric: per resolution (hop n/4, Hann n), spectral convergence ‖|S| − |Ŝ|‖_F / ‖|S|‖_F
    (per utterance, then averaged) plus mean |log|S| − log|Ŝ||; averaged over resolutions."""
    wav, wav_hat = _masked(wav, mask), _masked(wav_hat, mask)
    terms = []
    for n in fft_sizes:
        spec = MelSpec(n_fft=n, hop_length=n // 4, win_length=n, power=1.0)
        s, s_hat = stft_magnitude(wav, spec), stft_magnitude(wav_hat, spec)
        sc = jnp.sqrt(jnp.sum((s - s_hat) ** 2, axis=(1, 2))) / jnp.sqrt(jnp.sum(s ** 2, axis=(1, 2)) + 1e-12)
        log_l1 = jnp.abs(jnp.log(jnp.maximum(s, MEL_FLOOR)) - jnp.log(jnp.maximum(s_hat, MEL_FLOOR)))
        terms.append(jnp.mean(sc) + jnp.mean(log_l1))
    return sum(terms) / len(terms)


def _phasor_distance(p: jax.Array, p_hat: jax.Array, valid: jax.Array, eps: float) -> jax.Array:
    """Mean over utterances of Σ w·(1 − cos(∠p̂ − ∠p)) with w ∝ |p| on `valid` entries (summing to 1 per
    utterance). Written with products, not angles: ∠ has no gradient at 0 and wraps at ±π."""
    axes = tuple(range(1, p.ndim))
    valid = jnp.broadcast_to(valid, p.shape)
    mag = jnp.abs(p) * valid
    scale = jnp.sum(mag, axes, keepdims=True) / jnp.maximum(jnp.sum(valid, axes, keepdims=True), 1.0)
    cos = jnp.real(p_hat * jnp.conj(p)) / (jnp.abs(p_hat) * jnp.abs(p) + eps * scale ** 2)
    w = mag / jnp.maximum(jnp.sum(mag, axes, keepdims=True), 1e-12)
    return jnp.mean(jnp.sum(w * (1.0 - cos), axes))


def phase_derivative_loss(wav: jax.Array, wav_hat: jax.Array, fft_sizes: Sequence[int] = (512, 1024),
                          mask: jax.Array | None = None, eps: float = 1e-3) -> jax.Array:
    """Phase losses without the absolute phase, after APNet (Ai & Ling 2023): per resolution (hop n/4, Hann
    n), the instantaneous frequency (the phase advance of each bin from frame to frame) and the group delay
    (the phase step from bin to bin) of the output against the input's, as 1 − cos of their difference,
    weighted by the input's magnitude so that the harmonics count and noise-floor bins (random phase) do not.

    A voiced frame is a set of harmonics whose phases advance steadily; the magnitude losses leave that free
    and a frame-rate iSTFT decoder fills it with incoherent phases (pYIN hears noise). The absolute phase is
    left out: a decoder of mel-derived latents cannot know it, and only its derivatives shape what is heard.
    Averaged over resolutions and the two derivatives; 0 when the phases advance as the input's do."""
    wav, wav_hat = _masked(wav, mask), _masked(wav_hat, mask)
    terms = []
    for n in fft_sizes:
        spec = MelSpec(n_fft=n, hop_length=n // 4, win_length=n, power=1.0)
        s, s_hat = stft(wav, spec), stft(wav_hat, spec)
        frames = jnp.ones(s.shape[:2]) if mask is None else _frame_mask(mask, s.shape[1], spec.hop_length)
        frames = frames[..., None]
        # instantaneous frequency: frame t+1 against frame t; group delay: bin k+1 against bin k
        time = frames[:, 1:] * frames[:, :-1]
        terms.append(_phasor_distance(s[:, 1:] * jnp.conj(s[:, :-1]), s_hat[:, 1:] * jnp.conj(s_hat[:, :-1]),
                                      time, eps))
        terms.append(_phasor_distance(s[..., 1:] * jnp.conj(s[..., :-1]),
                                      s_hat[..., 1:] * jnp.conj(s_hat[..., :-1]), frames, eps))
    return sum(terms) / len(terms)
