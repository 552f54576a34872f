"""Flow-VAE: flow invertibility and log-det, KL (flow vs analytic), padding, lengths, Snake."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from speech_jax.layers.snake import Snake
from speech_jax.models.flow_vae import FlowVAE

SR = 16000


def config(**kw):
    c = ml_collections.ConfigDict(dict(
        channels=4, strides=(2, 4, 5, 8), decoder_channels=16, latent_dim=4, residual_dilations=(1, 3, 9),
        kernel_size=7, use_flow=True, flow_layers=4, flow_hidden=8, flow_kernel=3, dtype="float32"))
    c.update(kw)
    return c


def perturbed(model, seed=0, scale=0.1):
    """Random (non-identity) coupling output layers, so the flow's tests are not trivially passed."""
    keys = iter(jax.random.split(jax.random.key(seed), 2 * len(model.couplings)))
    for c in model.couplings:
        c.out.kernel[...] = scale * jax.random.normal(next(keys), c.out.kernel[...].shape)
        c.out.bias[...] = scale * jax.random.normal(next(keys), c.out.bias[...].shape)
    return model


def mask_of(lengths, frames):
    return jnp.arange(frames)[None] < jnp.asarray(lengths)[:, None]


@pytest.fixture(scope="module")
def base():
    """A concrete model at hop 8 (cheap to build and run); the hop-320 model is only traced abstractly."""
    return FlowVAE(config(strides=(2, 4)), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def flow_model(base):
    return perturbed(nnx.clone(base))


@pytest.fixture(scope="module")
def vae(base):
    """Encode, decode (masked) and the training forward in one jitted function."""
    graphdef, state = nnx.split(base)

    @jax.jit
    def run(state, wav, wav_len, z, z_mask, rng):
        model = nnx.merge(graphdef, state)
        return model.encode(wav, wav_len), model.decode(z, z_mask), model(wav, wav_len, rng)
    return dict(model=base, state=state, run=run)


def test_flow_inverts(flow_model):
    z = jax.random.normal(jax.random.key(1), (2, 6, 4))
    m = mask_of([6, 4], 6)
    u, logdet = flow_model.flow(z, m)
    assert not np.allclose(u, z, atol=1e-2)  # really non-trivial
    assert np.all(np.abs(logdet) > 1e-3)
    np.testing.assert_allclose(flow_model.flow_inverse(u, m), z, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("valid", [3, 2])
def test_logdet_is_log_abs_det_jacobian(flow_model, valid):
    shape = (1, 3, 4)
    z = jax.random.normal(jax.random.key(2), shape)
    m = mask_of([valid], 3)

    def f(flat):
        return flow_model.flow(flat.reshape(shape), m)[0].reshape(-1)

    jac = jax.jacfwd(f)(z.reshape(-1))
    sign, expected = jnp.linalg.slogdet(jac)
    assert sign != 0
    _, logdet = flow_model.flow(z, m)
    assert abs(float(expected)) > 1e-2
    np.testing.assert_allclose(logdet[0], expected, rtol=1e-4, atol=1e-4)


def test_identity_at_init_and_kl_matches_analytic(base):
    flow = base
    plain = FlowVAE(config(strides=(2, 4), use_flow=False), rngs=nnx.Rngs(3))
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    mean = jax.random.normal(k1, (2, 5, 4))
    log_std = 0.5 * jax.random.normal(k2, (2, 5, 4))
    m = mask_of([5, 3], 5)
    u, logdet = flow.flow(mean, m)
    np.testing.assert_array_equal(u, mean)
    np.testing.assert_array_equal(logdet, 0.0)

    # Plain VAE: exactly the analytic Gaussian KL per valid frame, whatever z is.
    mu, ls, mk = np.asarray(mean), np.asarray(log_std), np.asarray(m, np.float64)[..., None]
    analytic = np.sum(mk * (0.5 * (mu ** 2 + np.exp(2 * ls) - 1) - ls)) / mk.sum()
    for z in (mean, jnp.zeros_like(mean)):
        np.testing.assert_allclose(plain.kl(mean, log_std, z, m), analytic, rtol=1e-6)

    # Flow at init: the single-sample estimate averages to the analytic value.
    @jax.jit
    def estimates(keys):
        return jax.vmap(lambda k: flow.kl(mean, log_std, flow.sample_latent(mean, log_std, k), m))(keys)
    samples = np.asarray(estimates(jax.random.split(k3, 4000)))
    stderr = samples.std() / np.sqrt(samples.size)
    assert samples.std() > 0
    assert abs(samples.mean() - analytic) < 4 * stderr, (samples.mean(), analytic, stderr)


def test_padding_frames_contribute_nothing(flow_model):
    k = jax.random.split(jax.random.key(5), 6)
    mean, log_std, z = (jax.random.normal(k[i], (2, 6, 4)) for i in range(3))
    m = mask_of([6, 3], 6)
    pad = ~m[..., None]
    mean2, log_std2, z2 = (jnp.where(pad, 10 * jax.random.normal(k[3 + i], x.shape), x)
                           for i, x in enumerate((mean, log_std, z)))
    np.testing.assert_allclose(flow_model.kl(mean, log_std, z, m), flow_model.kl(mean2, log_std2, z2, m),
                               rtol=1e-6)
    u, ld = flow_model.flow(z, m)
    u2, ld2 = flow_model.flow(z2, m)
    np.testing.assert_allclose(ld, ld2, rtol=1e-6)
    np.testing.assert_allclose(jnp.where(pad, 0, u), jnp.where(pad, 0, u2), rtol=1e-6)
    np.testing.assert_array_equal(jnp.where(pad, u2, 0), jnp.where(pad, z2, 0))  # passed through
    # Normalised per valid frame: one valid frame among many padded ones is not diluted.
    one = mask_of([1, 0], 6)
    kl_one = flow_model.kl(mean, log_std, z, one)
    kl_solo = flow_model.kl(mean[:1, :1], log_std[:1, :1], z[:1, :1], one[:1, :1])
    np.testing.assert_allclose(kl_one, kl_solo, rtol=1e-5)


def abstract(cfg):
    """FlowVAE(cfg) split into graphdef and a state of shapes only: traced, never built or compiled."""
    return nnx.split(nnx.eval_shape(lambda: FlowVAE(cfg, rngs=nnx.Rngs(0))))


def abstract_call(model, method, *args):
    graphdef, state = model
    return jax.eval_shape(lambda s, *a: getattr(nnx.merge(graphdef, s), method)(*a), state, *args)


@pytest.fixture(scope="module")
def hop320():
    return abstract(config())


@pytest.mark.parametrize("seconds", [2.0, 3.0, 4.0])
def test_lengths_round_trip(hop320, seconds):
    hop, dim = 320, config().latent_dim
    for extra in (0, 123):  # a trailing partial frame is truncated
        wav = jax.ShapeDtypeStruct((2, int(seconds * SR) + extra), jnp.float32)
        mean, log_std, mask = abstract_call(hop320, "encode", wav, jax.ShapeDtypeStruct((2,), jnp.int32))
        frames = int(seconds * SR) // hop
        assert mean.shape == log_std.shape == (2, frames, dim) and mask.shape == (2, frames)
        assert abstract_call(hop320, "decode", mean).shape == (2, frames * hop)


def test_bf16_compute_keeps_latents_and_kl_fp32():
    out = abstract_call(abstract(config(dtype="bfloat16")), "__call__",
                        jax.ShapeDtypeStruct((2, 3200), jnp.float32), jax.ShapeDtypeStruct((2,), jnp.int32),
                        jax.random.key(0))
    for k in ("mean", "log_std", "z", "kl", "wav_hat"):
        assert out[k].dtype == jnp.float32, k


def test_forward_and_padding_independence(vae):
    hop, rs = vae["model"].hop, np.random.RandomState(0)
    assert hop == 8
    n = 7 * hop + 5  # 7 valid frames and a partial one
    signal = (0.3 * np.sin(2 * np.pi * 200 * np.arange(n) / SR) + 0.05 * rs.randn(n)).astype(np.float32)
    wav = rs.randn(2, 12 * hop).astype(np.float32)  # different garbage in each row's padding
    wav[:, :n] = signal
    length = jnp.array([n, n])
    frames = jnp.arange(12) < 7
    z = jnp.where(frames[:, None], rs.randn(12, 4), jnp.array([[5.0], [-3.0]])[:, :, None])  # garbage too
    (mean, log_std, mask), wav_hat, out = vae["run"](vae["state"], wav, length, z, mask_of([7, 7], 12),
                                                     jax.random.key(0))
    assert mean.shape == (2, 12, 4) and mask.tolist() == [frames.tolist()] * 2
    np.testing.assert_allclose(mean[0, :7], mean[1, :7], atol=1e-5)
    np.testing.assert_allclose(log_std[0, :7], log_std[1, :7], atol=1e-5)
    # Decoder with the frame mask: valid samples ignore whatever the padded latent frames hold.
    assert wav_hat.shape == (2, 12 * hop)
    np.testing.assert_allclose(wav_hat[0, :7 * hop], wav_hat[1, :7 * hop], atol=1e-5)

    assert out["wav_hat"].shape == (2, 12 * hop) and out["z"].shape == (2, 12, 4)
    np.testing.assert_array_equal(out["mean"], mean)
    assert np.isfinite(float(out["kl"])) and float(out["kl"]) > 0
    assert np.all(np.isfinite(out["wav_hat"])) and np.abs(out["wav_hat"]).max() < 1


def test_logical_names_and_fp32_params(vae):
    leaves = jax.tree.leaves(nnx.state(vae["model"], nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert leaves
    for var in leaves:
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == var.get_value().ndim
        assert var.get_value().dtype == jnp.float32


def test_snake():
    snake = Snake(3, rngs=nnx.Rngs(0))
    x = jnp.linspace(-3, 3, 12).reshape(1, 4, 3)
    np.testing.assert_allclose(snake(x), x + jnp.sin(x) ** 2, rtol=1e-6)  # alpha = 1 at init
    snake.log_alpha[...] = jnp.log(jnp.array([0.5, 1.0, 2.0]))
    alpha = jnp.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(snake(x), x + jnp.sin(alpha * x) ** 2 / alpha, rtol=1e-5)
    y = snake(x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    assert snake.log_alpha.get_metadata()["out_sharding"] == ("conv_out",)


# --- the frame-rate encoder and decoder (models/vocos.py) ------------------------------------------

def test_istft_inverts_the_mel_framing():
    from speech_jax.audio.mel import MelSpec, _frames
    from speech_jax.layers.istft import hann, istft
    hop = 80
    x = np.random.RandomState(0).randn(hop * 12).astype(np.float32)
    frames = _frames(jnp.asarray(x), MelSpec(n_fft=4 * hop, win_length=4 * hop, hop_length=hop))
    y = np.asarray(istft(jnp.fft.rfft(frames * hann(4 * hop), axis=-1), hop))
    assert y.shape == x.shape
    # Exact wherever all four overlapping frames exist: every block but the first and the last two.
    np.testing.assert_allclose(y[hop:-2 * hop], x[hop:-2 * hop], atol=1e-5)


@pytest.mark.parametrize("r", [1, 2, 4])
def test_the_decoder_renders_its_subframes_in_time_order(r):
    """Head outputs holding a signal's STFT at hop / r (each latent frame's r frames in order) render it."""
    from speech_jax.audio.mel import MelSpec, _frames
    from speech_jax.layers.istft import hann
    from speech_jax.models.vocos import ISTFTDecoder
    hop = 80
    cfg = config(latent_dim=4, frame_dim=8, frame_mlp_dim=16, frame_layers=1, decoder_subframes=r)
    decoder = ISTFTDecoder(cfg, hop, dtype=jnp.float32, rngs=nnx.Rngs(0))
    step = hop // r
    x = 0.1 * np.random.RandomState(0).randn(hop * 12).astype(np.float32)
    frames = _frames(jnp.asarray(x), MelSpec(n_fft=4 * step, win_length=4 * step, hop_length=step))
    spectrum = jnp.fft.rfft(frames * hann(4 * step), axis=-1)  # [12·r, bins]
    h = jnp.concatenate([jnp.log(jnp.abs(spectrum) + 1e-12), jnp.angle(spectrum)], axis=-1)
    y = np.asarray(decoder.render(h.reshape(1, 12, -1)))[0]
    assert y.shape == x.shape
    np.testing.assert_allclose(y[step:-2 * step], x[step:-2 * step], atol=1e-5)


def test_subframes_must_divide_the_hop():
    cfg = config(encoder="mel", decoder="istft", frame_dim=8, frame_mlp_dim=16, frame_layers=1,
                 encoder_n_mels=20, sample_rate=SR, decoder_subframes=3)
    with pytest.raises(ValueError, match="decoder_subframes"):
        FlowVAE(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("encoder_subframes, decoder_subframes", [(1, 1), (2, 4)])
def test_frame_rate_vae_lengths_and_padding_independence(encoder_subframes, decoder_subframes):
    cfg = config(strides=(2, 4, 5, 8), encoder="mel", decoder="istft", frame_dim=16, frame_mlp_dim=32,
                 frame_layers=2, encoder_n_mels=20, sample_rate=SR, encoder_subframes=encoder_subframes,
                 decoder_subframes=decoder_subframes)
    model = FlowVAE(cfg, rngs=nnx.Rngs(0))
    hop = model.hop
    wav = 0.1 * jax.random.normal(jax.random.key(0), (1, 6 * hop))
    run = jax.jit(lambda w, n: model.encode(w, n))
    mean, _, frame_mask = run(wav, jnp.array([6 * hop]))
    assert mean.shape == (1, 6, cfg.latent_dim) and bool(frame_mask.all())
    # The same utterance with 4 frames of padding (garbage in it): the valid frames do not change.
    padded = jnp.concatenate([wav, jax.random.normal(jax.random.key(1), (1, 4 * hop))], axis=1)
    mean2, _, mask2 = run(padded, jnp.array([6 * hop]))
    np.testing.assert_allclose(mean2[:, :6], mean, atol=1e-5)
    assert mask2.sum() == 6
    z = jax.random.normal(jax.random.key(2), (1, 10, cfg.latent_dim))
    out = model.decode(z, mask2)
    assert out.shape == (1, 10 * hop)
    z_short = model.decode(z[:, :6], mask2[:, :6])
    # Padding frames are silent and do not reach the valid samples.
    np.testing.assert_allclose(out[:, :6 * hop], z_short, atol=1e-5)
    assert float(jnp.abs(out[:, 8 * hop:]).max()) == 0.0


def test_min_latent_std_floors_the_posterior_that_sampling_and_the_kl_see(base):
    """With `min_latent_std` the training forward samples z at least that far from the mean and charges the KL
    for the floored σ; the means, and the model without a floor, are unchanged."""
    floor = 2.0  # above the encoder's σ at init (about 1)
    floored = FlowVAE(config(strides=(2, 4), min_latent_std=floor), rngs=nnx.Rngs(0))
    nnx.update(floored, nnx.state(base))
    wav = 0.1 * jax.random.normal(jax.random.key(1), (2, 64))
    lengths = jnp.asarray([64, 40])
    plain, out = base(wav, lengths, jax.random.key(2)), floored(wav, lengths, jax.random.key(2))
    m = np.asarray(out["frame_mask"])
    np.testing.assert_array_equal(out["mean"], plain["mean"])
    assert float(jnp.max(plain["log_std"])) < np.log(floor), "the test needs an encoder σ below the floor"
    np.testing.assert_allclose(np.asarray(out["log_std"])[m], np.log(floor), rtol=1e-6)
    spread = np.std(np.asarray(out["z"] - out["mean"])[m])
    assert 0.7 * floor < spread < 1.3 * floor, spread
    np.testing.assert_allclose(out["kl"], floored.kl(out["mean"], out["log_std"], out["z"], out["frame_mask"]))
    assert not np.allclose(out["kl"], plain["kl"])
    with pytest.raises(ValueError, match="min_latent_std"):
        FlowVAE(config(strides=(2, 4), min_latent_std=-1.0), rngs=nnx.Rngs(0))


def test_min_latent_std_ratio_floors_sigma_at_a_share_of_each_channels_spread(base):
    """The relative floor is `ratio` × each channel's spread of the means over valid frames: latents scaled up
    k-fold get a floor k times higher (no escape by scaling), padding frames do not move it, and the training
    forward samples and charges the KL with the floored σ."""
    ratio = 0.5
    model = FlowVAE(config(strides=(2, 4), min_latent_std_ratio=ratio), rngs=nnx.Rngs(0))
    nnx.update(model, nnx.state(base))
    rng = np.random.default_rng(0)
    scales = np.asarray([0.1, 1.0, 4.0, 0.01], np.float32)[: base.latent_dim]
    mean = jnp.asarray(rng.normal(size=(2, 6, base.latent_dim)).astype(np.float32) * scales)
    mask = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2])
    tiny = jnp.full(mean.shape, -9.0)
    floor = np.asarray(model.relative_std_floor(mean, tiny, mask))
    spread = np.std(np.asarray(mean)[np.asarray(mask)], axis=0)
    np.testing.assert_allclose(np.exp(floor[0, 0]), ratio * spread, rtol=1e-4, atol=2e-6)  # + the log's 1e-6
    scaled = np.asarray(model.relative_std_floor(3 * mean, tiny, mask))
    np.testing.assert_allclose(np.exp(scaled - floor), 3.0, rtol=1e-3)
    garbage = mean.at[1, 4:].set(100.0)
    np.testing.assert_allclose(model.relative_std_floor(garbage, tiny, mask), floor, rtol=1e-5)
    high = jnp.full(mean.shape, 3.0)  # σ above the floor is left alone
    np.testing.assert_array_equal(model.relative_std_floor(mean, high, mask), high)
    wav = 0.1 * jax.random.normal(jax.random.key(1), (2, 64))
    lengths = jnp.asarray([64, 40])
    plain, out = base(wav, lengths, jax.random.key(2)), model(wav, lengths, jax.random.key(2))
    np.testing.assert_allclose(out["log_std"], model.relative_std_floor(plain["mean"], plain["log_std"],
                                                                        plain["frame_mask"]), rtol=1e-6)
    np.testing.assert_allclose(out["kl"], model.kl(out["mean"], out["log_std"], out["z"], out["frame_mask"]))
    with pytest.raises(ValueError, match="min_latent_std_ratio"):
        FlowVAE(config(strides=(2, 4), min_latent_std_ratio=1.5), rngs=nnx.Rngs(0))
