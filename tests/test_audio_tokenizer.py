"""Audio tokenizer: rates, padding invariance, learning, straight-through, CTC error rate, jit encode."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.tokenizer import tiny
from speech_jax.models.audio_tokenizer import encode
from speech_jax.models.vq import VectorQuantizer
from speech_jax.train.tasks import tokenizer as task

SR, HOP = 16000, 320
VOCAB = 32


def assert_logical_names(module):
    for var in jax.tree.leaves(nnx.state(module, nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable)):
        names = var.get_metadata().get("out_sharding")
        assert names is not None and len(names) == var.get_value().ndim, (names, var.get_value().shape)


def small_config():
    c = tiny.get_config()
    c.model.update(dict(d_model=64, num_layers=1, num_heads=4, num_kv_heads=2, mlp_dim=128,
                        codebook_size=64, code_dim=8, text_vocab_size=VOCAB))
    return c


def make_batch(lengths, total, seed=0, text_len=(6, 4)):
    """Harmonic 'syllables' with noise, zero padded after each length (not corpus audio)."""
    rs = np.random.RandomState(seed)
    audio = np.zeros((len(lengths), total), np.float32)
    for i, n in enumerate(lengths):
        t = np.arange(n) / SR
        f0 = 120 + 80 * np.sin(2 * np.pi * 1.5 * t + i)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        sig = sum(np.sin(h * phase) / h for h in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
        audio[i, :n] = 0.1 * sig + 0.01 * rs.randn(n)
    ids = rs.randint(1, VOCAB, (len(lengths), 8)).astype(np.int32)
    text_len = np.asarray(text_len[:len(lengths)], np.int32)
    ids[np.arange(8)[None] >= text_len[:, None]] = 0
    return dict(audio=audio, audio_len=np.asarray(lengths, np.int32), text_ids=ids, text_len=text_len)


@pytest.fixture(scope="module")
def setup():
    config = small_config()
    model = task.build_model(config, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)

    @jax.jit
    def train_step(params, rest, opt_state, batch, rng):
        def loss_of(p):
            # copy=True: the loss mutates the VQ state, so it needs variables of its own trace.
            m = nnx.merge(graphdef, p, rest, copy=True)
            loss, metrics = task.loss_fn(m, batch, rng, jnp.int32(0))
            return loss, (metrics, nnx.state(m, nnx.Not(nnx.Param)))
        (loss, (metrics, new_rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, opt_state, metrics, grads

    @jax.jit
    def eval_step(params, rest, batch):
        return task.eval_fn(nnx.merge(graphdef, params, rest), batch)

    @jax.jit
    def encode_step(params, rest, audio, audio_len):
        return encode(nnx.merge(graphdef, params, rest), audio, audio_len)

    return dict(config=config, model=model, graphdef=graphdef, params=params, rest=rest, tx=tx,
                train_step=train_step, eval_step=eval_step, encode_step=encode_step)


def test_rates_and_shapes(setup):
    s, total = setup, 32 * 2 * HOP
    batch = make_batch([total, 15000], total)
    ids, mask = s["encode_step"](s["params"], s["rest"], batch["audio"], batch["audio_len"])
    assert ids.shape == mask.shape == (2, total // HOP // 2) and ids.dtype == jnp.int32
    np.testing.assert_array_equal(mask.sum(1), [total // HOP // 2, 15000 // HOP // 2])
    out = nnx.merge(s["graphdef"], s["params"], s["rest"])(
        *s["model"].features(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_len"])))
    assert out["mel_pred"].shape == (2, total // HOP, s["config"].mel.n_mels)
    assert out["ctc_logits"].shape == (2, total // HOP // 2, VOCAB)


def test_padding_does_not_change_tokens_or_loss(setup):
    s = setup
    lengths = [14400, 11000]
    short, long = make_batch(lengths, 32 * 2 * HOP), make_batch(lengths, 48 * 2 * HOP)
    ids_a, mask_a = s["encode_step"](s["params"], s["rest"], short["audio"], short["audio_len"])
    ids_b, mask_b = s["encode_step"](s["params"], s["rest"], long["audio"], long["audio_len"])
    n = ids_a.shape[1]
    np.testing.assert_array_equal(mask_a, mask_b[:, :n])
    assert not np.any(mask_b[:, n:])
    np.testing.assert_array_equal(np.where(mask_a, ids_a, -1), np.where(mask_b[:, :n], ids_b[:, :n], -1))
    ma = s["eval_step"](s["params"], s["rest"], short)
    mb = s["eval_step"](s["params"], s["rest"], long)
    for k in ("loss", "mel_loss", "ctc_loss", "commit_loss", "perplexity"):
        np.testing.assert_allclose(ma[k], mb[k], rtol=1e-4, err_msg=k)


def test_adam_steps_lower_the_loss_and_update_vq_state(setup):
    s = setup
    batch = make_batch([20480, 16000], 20480)
    params, rest, opt_state = s["params"], s["rest"], s["tx"].init(s["params"])
    losses = []
    for i in range(8):
        params, rest, opt_state, metrics, grads = s["train_step"](params, rest, opt_state, batch,
                                                                  jax.random.key(i))
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    # The EMA codebook was data-initialised and moved; parameters were not touched by that.
    assert bool(rest["vq"]["initialized"].get_value())
    assert not np.allclose(rest["vq"]["codebook"].get_value(), s["rest"]["vq"]["codebook"].get_value())
    # The encoder below the quantiser gets gradients.
    g = grads["enc_in"]["kernel"].get_value()
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0
    assert 0 < float(metrics["code_usage"]) <= 1 and float(metrics["perplexity"]) >= 1


def test_eval_does_not_change_state_and_predicts_ctc(setup):
    s = setup
    batch = make_batch([20480, 16000], 20480)
    model = nnx.merge(s["graphdef"], s["params"], s["rest"])
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.Param)))
    out = task.eval_fn(model, batch)
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert out["ctc_pred"].shape == (2, 32) and list(out["ctc_pred_len"]) == [32, 25]
    cer = task.ctc_token_error_rate(out["ctc_pred"], out["ctc_pred_len"], batch["text_ids"], batch["text_len"])
    assert 0.0 <= cer


def test_encoder_ctc_adds_its_term_and_trains_its_own_head():
    """`model.ctc_encoder_weight`: CTC on the features before quantisation, with a head of its own;
    `model.mel_weight` scales the mel reconstruction."""
    config = small_config()
    config.model.ctc_encoder_weight = 0.5
    config.model.mel_weight = 0.25
    model = task.build_model(config, nnx.Rngs(0))
    batch = make_batch([20480, 16000], 20480)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(p):
        return task.loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch, jax.random.key(0), jnp.int32(0))

    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_of, has_aux=True))(params)
    m = {k: float(v) for k, v in metrics.items()}
    others = 0.25 * (m["mel_loss"] + m["mel_l2"]) + m["vq_loss"] + config.model.ctc_weight * m["ctc_loss"]
    assert m["ctc_encoder_loss"] > 0
    np.testing.assert_allclose(float(loss), others + 0.5 * m["ctc_encoder_loss"], rtol=1e-5)
    assert np.abs(grads["ctc_encoder_head"]["kernel"].get_value()).max() > 0
    assert "ctc_encoder_head" not in nnx.state(task.build_model(small_config(), nnx.Rngs(0)), nnx.Param)


def test_decoder_voice_conditions_the_decoder_only():
    """`model.decoder_voice`: the decoder sees the utterance's mel statistics (another utterance's give another
    mel), padding does not change them, and their projection trains."""
    config = small_config()
    config.model.decoder_voice = True
    model = task.build_model(config, nnx.Rngs(0))
    batch = make_batch([20480, 16000], 20480)
    mel, frames = model.features(jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_len"]))
    voice = jax.jit(model.voice)(mel, frames)
    padded = make_batch([20480, 16000], 24000)  # the same audio with more padding
    np.testing.assert_allclose(jax.jit(model.voice)(*model.features(jnp.asarray(padded["audio"]),
                                                                    jnp.asarray(padded["audio_len"]))),
                               voice, atol=1e-4)

    @jax.jit
    def own_and_swapped(mel, frames):  # the decoder with each utterance's own voice, then with the other's
        out = model(mel, frames)
        q = model.vq(*model.encode_frames(mel, frames))[0]
        return out["mel_pred"], model.decode_codes(q, out["token_mask"], frames, model.voice(mel, frames)[::-1])

    own, swapped = own_and_swapped(mel, frames)
    assert float(jnp.abs(swapped - own).max()) > 1e-3
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(p):
        return task.loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch, jax.random.key(0), jnp.int32(0))[0]

    grads = jax.jit(jax.grad(loss_of))(params)
    assert np.abs(grads["voice_proj"]["kernel"].get_value()).max() > 0
    assert "voice_proj" not in nnx.state(task.build_model(small_config(), nnx.Rngs(0)), nnx.Param)


def test_encoder_utterance_norm_gives_the_same_codes_whatever_each_channels_level():
    """`model.encoder_utterance_norm`: scaling and shifting every mel channel of an utterance (a voice's tilt
    and loudness) leaves the encoder's features as they were; without it they move."""
    mel = -5.0 + 3.0 * jax.random.normal(jax.random.key(1), (2, 64, 80))  # channels that vary, as speech's do
    frames = jnp.arange(64)[None] < jnp.asarray([64, 50])[:, None]
    gain, offset = jnp.linspace(0.8, 1.25, 80), jnp.linspace(-1.0, 1.0, 80)
    for on in (True, False):
        config = small_config()
        config.model.encoder_utterance_norm = on
        model = task.build_model(config, nnx.Rngs(0))
        encode = jax.jit(lambda m, f: model.encode_frames(m, f)[0])  # noqa: B023
        moved = float(jnp.abs(encode(mel * gain + offset, frames) - encode(mel, frames)).max())
        assert (moved < 1e-2) if on else (moved > 1e-1), (on, moved)


def test_straight_through_passes_gradients_to_the_encoder():
    vq = VectorQuantizer(16, 32, 8, l2norm=False, update="loss", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 5, 16))
    mask = jnp.ones((2, 5), bool)
    g = jax.grad(lambda x: jnp.sum(vq(x, mask)[0]))(x)
    # d out / d x = W_in W_out exactly: the quantiser is the identity for gradients.
    w = vq.proj_in.kernel[...] @ vq.proj_out.kernel[...]
    np.testing.assert_allclose(g, jnp.broadcast_to(w.sum(1), g.shape), rtol=1e-5)


def test_ctc_token_error_rate_on_hand_made_cases():
    blank = 0
    pred = np.array([[5, 5, blank, 5, 7, 7, blank, 9], [3, 3, 3, blank, blank, 4, 0, 0]])
    labels = np.array([[5, 5, 7, 9], [3, 4, 0, 0]])
    # Row 0 collapses to 5 5 7 9 (exact); row 1 to 3 4 (exact).
    assert task.ctc_token_error_rate(pred, [8, 8], labels, [4, 2]) == 0.0
    # Row 1 cut to 3 frames -> "3": one deletion over 6 reference tokens.
    assert task.ctc_token_error_rate(pred, [8, 3], labels, [4, 2]) == pytest.approx(1 / 6)
    # One substitution and one insertion.
    assert task.ctc_token_error_rate(np.array([[1, 2, 3]]), [3], np.array([[1, 4]]), [2]) == pytest.approx(2 / 2)


def test_every_param_has_logical_names(setup):
    assert_logical_names(setup["model"])
    for var in jax.tree.leaves(nnx.state(setup["model"], nnx.Not(nnx.Param)),
                               is_leaf=lambda v: isinstance(v, nnx.Variable)):
        assert len(var.get_metadata()["out_sharding"]) == var.get_value().ndim


def test_flops_scale_with_batch():
    c = small_config()
    f1 = task.flops_per_step(c, {"audio": (2, 20480)})
    assert f1 > 0 and task.flops_per_step(c, {"audio": (4, 20480)}) == pytest.approx(2 * f1)


def test_vtlp_warps_the_training_mel_only():
    """`model.vtlp`: the training loss sees each utterance's spectrum stretched (it changes with the draw),
    evaluation and encoding never do."""
    config = small_config()
    config.model.vtlp = 0.15
    warped, plain = task.build_model(config, nnx.Rngs(0)), task.build_model(small_config(), nnx.Rngs(0))
    batch = make_batch([20480, 16000], 20480)

    @jax.jit
    def losses(seed):
        def of(model):  # each from the model's own state (training moves the codebook's EMA)
            train = task.loss_fn(nnx.merge(*nnx.split(model), copy=True), batch, jax.random.key(seed), jnp.int32(0))
            return train[1]["mel_loss"], task.eval_fn(nnx.merge(*nnx.split(model), copy=True), batch)["mel_loss"]
        return of(warped), of(plain)

    (w0, w_eval), (p0, p_eval) = losses(0)
    (w1, _), (p1, _) = losses(1)
    np.testing.assert_allclose(w_eval, p_eval, rtol=1e-6)
    # The draw moves the plain model's loss a little (the codebook's restarts); the warps move it much more.
    draw = abs(float(p0) - float(p1))
    assert min(abs(float(w0) - float(p0)), abs(float(w1) - float(p1)), abs(float(w0) - float(w1))) > 3 * draw
    with pytest.raises(ValueError, match="vtlp"):
        config.model.vtlp = 0.5
        task.build_model(config, nnx.Rngs(0))
