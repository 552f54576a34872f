"""Discriminators (structure, STFT, gradients), Conv2d, and the GAN / spectral losses."""
import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import pytest
from flax import nnx

from speech_jax.layers.conv2d import Conv2d
from speech_jax.models import gan_losses as gl
from speech_jax.models.discriminators import Discriminators, complex_stft

SR = 16000
FFTS = (128, 256, 512)


def config():
    return ml_collections.ConfigDict(dict(
        mpd_periods=(2, 3, 5, 7, 11), mpd_channels=4, stft_ffts=FFTS, stft_channels=4,
        stft_bands=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0), dtype="float32"))


def tone(n, f0=220.0, seed=0):
    t = np.arange(n) / SR
    return (0.4 * np.sin(2 * np.pi * f0 * t) + 0.02 * np.random.RandomState(seed).randn(n)).astype(np.float32)


@pytest.fixture(scope="module")
def disc():
    model = Discriminators(config(), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)

    @jax.jit
    def run(params, wav):
        """Outputs, and the generator's adversarial + feature-matching gradient w.r.t. the fake wav."""
        d = nnx.merge(graphdef, params)
        logits, feats = d(wav)

        def g_loss(fake):
            fake_logits, fake_feats = d(fake)
            return gl.lsgan_generator_loss(fake_logits) + gl.feature_matching_loss(feats, fake_feats)
        return logits, feats, jax.grad(g_loss)(0.5 * wav)
    return model, params, run


def test_structure_and_gradients(disc):
    model, params, run = disc
    wav = jnp.asarray(np.stack([tone(2000), tone(2000, 330.0, 1)]))  # 2000 % 3, 7, 11 != 0: reflect pad
    logits, feats, grad = run(params, wav)
    assert len(logits) == len(feats) == 5 + len(FFTS)
    for lg, fs in zip(logits, feats):
        assert lg.ndim == 3 and lg.shape[0] == 2 and lg.dtype == jnp.float32
        assert np.all(np.isfinite(lg))
        assert fs and all(f.shape[0] == 2 and np.all(np.isfinite(f)) for f in fs)
    # MPD: the fold [T/p, p] keeps the period as the last axis.
    for lg, p in zip(logits[:5], (2, 3, 5, 7, 11)):
        assert lg.shape[2] == p and len(model.mpd.discs[0].convs) == 5
    # STFT: 5 bands x 5 convs each; time axis T / hop.
    for lg, fs, n in zip(logits[5:], feats[5:], FFTS):
        assert len(fs) == 25 and lg.shape[1] == 2000 // (n // 4)
    assert np.all(np.isfinite(grad)) and float(jnp.abs(grad).max()) > 0


def test_complex_stft_matches_librosa():
    x = tone(1000)
    ours = np.asarray(complex_stft(jnp.asarray(x[None]), 256))[0]
    ref = librosa.stft(x, n_fft=256, hop_length=64, window="hann", center=True, pad_mode="constant").T
    ref = ref[:ours.shape[0]]
    assert ours.shape == (1000 // 64, 129, 2)
    np.testing.assert_allclose(ours[..., 0], ref.real, atol=2e-3)
    np.testing.assert_allclose(ours[..., 1], ref.imag, atol=2e-3)


def test_conv2d_shapes_and_names():
    conv = Conv2d(3, 5, (5, 1), stride=(3, 1), rngs=nnx.Rngs(0))
    assert conv(jnp.ones((2, 10, 4, 3))).shape == (2, 4, 4, 5)  # ceil(10 / 3)
    assert conv.kernel.get_metadata()["out_sharding"] == (None, None, "conv_in", "conv_out")
    explicit = Conv2d(3, 2, (3, 3), padding=((0, 0), (1, 1)), dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = explicit(jnp.ones((1, 6, 6, 3)))
    assert y.shape == (1, 4, 6, 2) and y.dtype == jnp.bfloat16
    # A centred delta kernel passes the input through ("same" padding, stride 1).
    ident = Conv2d(1, 1, (3, 3), use_bias=False, rngs=nnx.Rngs(0))
    ident.kernel[...] = jnp.zeros((3, 3, 1, 1)).at[1, 1].set(1.0)
    x = jax.random.normal(jax.random.key(0), (1, 5, 7, 1))
    np.testing.assert_allclose(ident(x), x, rtol=1e-6)


def test_lsgan_losses():
    ones = [jnp.ones((2, 3, 4)), jnp.ones((2, 5))]
    zeros = [jnp.zeros((2, 3, 4)), jnp.zeros((2, 5))]
    assert float(gl.lsgan_discriminator_loss(ones, zeros)) == 0.0
    assert float(gl.lsgan_generator_loss(ones)) == 0.0
    # Everything wrong: each sub-discriminator scores 1 + 1, averaged -> 2; the generator sums 1 + 1.
    np.testing.assert_allclose(gl.lsgan_discriminator_loss(zeros, ones), 2.0)
    np.testing.assert_allclose(gl.lsgan_generator_loss(zeros), 2.0)
    half = [0.5 * o for o in ones]
    np.testing.assert_allclose(gl.lsgan_discriminator_loss(half, half), 0.5)
    bf16 = gl.lsgan_discriminator_loss([jnp.ones(3, jnp.bfloat16)], [jnp.zeros(3, jnp.bfloat16)])
    assert bf16.dtype == jnp.float32


def test_feature_matching():
    real = [[jnp.ones((2, 3)), jnp.zeros((2, 4))], [jnp.full((1, 2), 2.0)]]
    assert float(gl.feature_matching_loss(real, real)) == 0.0
    fake = [[jnp.zeros((2, 3)), jnp.zeros((2, 4))], [jnp.full((1, 2), 1.0)]]
    np.testing.assert_allclose(gl.feature_matching_loss(real, fake), 2.0)  # 1 + 0 + 1
    g_real, g_fake = jax.grad(gl.feature_matching_loss, argnums=(0, 1))(real, fake)
    assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(g_real))  # stop-gradient on real
    assert float(jnp.abs(g_fake[0][0]).sum()) > 0


SCALES = ((32, 5), (128, 20), (512, 80))


@jax.jit
def mel_cases(x, noisy, worse, mask):
    """Every multiscale_mel_loss case in one compile."""
    loss = lambda a, b, **kw: gl.multiscale_mel_loss(a, b, SR, scales=SCALES, **kw)
    padded_noise = jnp.where(mask, x, worse)
    return dict(same=loss(x, x), noisy=loss(x, noisy), worse=loss(x, worse),
                dac7=gl.multiscale_mel_loss(x, noisy, SR), pad_only=loss(x, padded_noise, mask=mask),
                masked=loss(x, noisy, mask=mask), grad=jax.grad(lambda y: loss(x, y))(noisy))


def test_multiscale_mel_loss():
    x = jnp.asarray(np.stack([tone(4000), tone(4000, 330.0, 1)]))
    noise = jax.random.normal(jax.random.key(0), x.shape)
    mask = jnp.arange(4000)[None] < jnp.array([[3000], [2500]])
    out = mel_cases(x, x + 0.05 * noise, x + 0.2 * noise, mask)
    assert float(out["same"]) == 0.0
    assert 0 < float(out["noisy"]) < float(out["worse"])
    assert len(gl.DAC_MEL_SCALES) == 7 and float(out["dac7"]) > 0
    # Differences only in the padding (and frames centred there) do not count.
    np.testing.assert_allclose(out["pad_only"], 0.0, atol=1e-6)
    assert float(out["masked"]) > 0
    assert np.all(np.isfinite(out["grad"])) and float(jnp.abs(out["grad"]).max()) > 0


def test_multiresolution_stft_distance():
    x = jnp.asarray(tone(4000)[None])
    assert float(gl.multiresolution_stft_distance(x, x)) == 0.0
    noisy = x + 0.05 * jax.random.normal(jax.random.key(1), x.shape)
    d = float(gl.multiresolution_stft_distance(x, noisy))
    assert 0 < d < float(gl.multiresolution_stft_distance(x, 0.3 * noisy + 0.3))
    # Spectral convergence alone: scaling the estimate by 2 gives ‖S‖/‖S‖ = 1 plus log(2) in log-magnitude.
    np.testing.assert_allclose(gl.multiresolution_stft_distance(x, 2 * x, fft_sizes=(256,)), 1 + np.log(2),
                               rtol=1e-3)


def test_phase_derivative_loss_hears_incoherent_phase_not_absolute_phase():
    """A voice of 19 harmonics on a gliding F0: the same with every harmonic's phase turned by π/2 (absolute
    phase, which a decoder of mel-derived latents cannot know) costs nothing; the same STFT magnitudes with
    random phases (what an iSTFT decoder trained on magnitudes alone may render: noise) cost a lot, though
    the magnitude loss alone scores the two alike."""
    t = np.arange(SR) / SR
    phase = 2 * np.pi * np.cumsum(120 * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / SR
    voice = sum(np.cos(k * phase) / k for k in range(1, 20)) / 10
    turned = sum(np.sin(k * phase) / k for k in range(1, 20)) / 10
    stft = librosa.stft(voice, n_fft=512, hop_length=128)
    random = np.random.RandomState(0).uniform(0, 2 * np.pi, stft.shape)
    noise = librosa.istft(np.abs(stft) * np.exp(1j * random), hop_length=128, length=SR)
    x, turned, noise = (jnp.asarray(a[None], jnp.float32) for a in (voice, turned, noise))
    loss = lambda y: float(gl.phase_derivative_loss(x, y))  # noqa: E731
    assert loss(x) < 0.01 and loss(turned) < 0.02
    assert loss(noise) > 0.3
    grad = jax.grad(lambda y: gl.phase_derivative_loss(x, y))(jnp.zeros_like(x))  # silence: no 0/0
    assert bool(jnp.all(jnp.isfinite(grad)))
    # Padding is ignored: a masked tail of garbage changes nothing.
    mask = jnp.arange(SR + 4000)[None] < SR
    padded = lambda a: jnp.pad(a, ((0, 0), (0, 4000)), constant_values=0.5)  # noqa: E731
    np.testing.assert_allclose(float(gl.phase_derivative_loss(padded(x), padded(noise), mask=mask)),
                               loss(noise), rtol=0.05)
