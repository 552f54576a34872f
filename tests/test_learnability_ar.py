"""The AR stage learns: through the task's own loss (speaker encoder on reference audio, the one layout),
a tiny model memorises a few token sequences, zero-shot and one-shot, and free-running KV-cache decoding
then reproduces every one of them token for token, EOS included. A wiring bug (a shifted label, a leaky
mask, a prefix that decoding lays out differently from training) cannot reach this. It trains on the packed
layout (`pack_prompt_slots`, every prompt fits) and decodes from the static prefix, as the demo does."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.infer.ar_decode import STATIC_ARGNAMES, generate
from speech_jax.models.ar_layout import build_prefix
from speech_jax.models.ar_transformer import ARTransformer
from speech_jax.train.tasks.ar import _forward

K, ROWS, LT, LA, LP, PA = 16, 4, 6, 14, 3, 5
SPEC = MelSpec(sample_rate=16000, n_fft=256, hop_length=160, win_length=256, n_mels=16)


def _config():
    return ml_collections.ConfigDict(dict(
        d_model=64, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=128, rope_theta=10000.0,
        attention_impl="einsum", dtype="float32", text_vocab_size=32, codebook_size=K, speaker="learnable",
        scan_layers=False, remat="none", spk_d_model=16, spk_layers=1, spk_heads=2, spk_mlp_dim=32, spk_dim=16,
        pack_prompt_slots=LP + PA))


def _batch():
    """Four utterances of different lengths, each with its own text, tokens, prompt and reference audio."""
    rs = np.random.RandomState(0)
    tokens_len = np.array([LA, 11, 9, 12], np.int32)
    tokens = rs.randint(0, K, (ROWS, LA)).astype(np.int32) * (np.arange(LA) < tokens_len[:, None])
    text_len = np.array([LT, 5, 4, 6], np.int32)
    text = rs.randint(1, 32, (ROWS, LT)).astype(np.int32) * (np.arange(LT) < text_len[:, None])
    t = np.arange(8000) / 16000.0
    ref = np.stack([0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.1 * rs.randn(t.size)) for f in (150, 220, 300, 410)])
    return dict(text_ids=text, text_len=text_len, tokens=tokens, tokens_len=tokens_len,
                prompt_text_ids=rs.randint(1, 32, (ROWS, LP)).astype(np.int32),
                prompt_text_len=np.full(ROWS, LP, np.int32),
                prompt_tokens=rs.randint(0, K, (ROWS, PA)).astype(np.int32),
                prompt_tokens_len=np.full(ROWS, PA, np.int32),
                ref_audio=ref.astype(np.float32), ref_len=np.full(ROWS, t.size, np.int32))


@pytest.fixture(scope="module")
def memorised():
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    model = ARTransformer(_config(), SPEC, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)
    zero, one = jnp.zeros(ROWS, bool), jnp.ones(ROWS, bool)

    def loss(p):
        m = nnx.merge(graphdef, p, rest)
        l0, acc0, eos0, _, _ = _forward(m, batch, zero)
        l1, acc1, eos1, _, _ = _forward(m, batch, one)
        return l0 + l1, (acc0, acc1, eos0, eos1)

    @jax.jit
    def step(p, opt):
        (value, accs), g = jax.value_and_grad(loss, has_aux=True)(p)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt, value, accs

    opt = tx.init(params)
    for _ in range(300):
        params, opt, value, accs = step(params, opt)
    return graphdef, params, rest, batch, float(value), [float(a) for a in accs]


def test_teacher_forced_accuracy_reaches_one(memorised):
    *_, value, (acc_zero, acc_one, eos_zero, eos_one) = memorised
    assert acc_zero == 1.0 and acc_one == 1.0 and eos_zero == 1.0 and eos_one == 1.0, memorised[-1]
    assert value < 0.05


@pytest.mark.parametrize("mode", ["zero_shot", "one_shot"])
def test_free_running_decode_reproduces_every_sequence(memorised, mode):
    graphdef, params, rest, batch, *_ = memorised
    model = nnx.merge(graphdef, params, rest)
    on = mode == "one_shot"
    off = lambda n: n if on else jnp.zeros_like(n)  # noqa: E731
    prefix = build_prefix(batch["text_ids"], batch["text_len"], batch["prompt_text_ids"],
                          off(batch["prompt_text_len"]), batch["prompt_tokens"], off(batch["prompt_tokens_len"]),
                          codebook_size=K)
    spk = model.speaker_embedding(batch["ref_audio"], batch["ref_len"])
    g, state = nnx.split(model)
    run = jax.jit(generate, static_argnums=0, static_argnames=STATIC_ARGNAMES)
    tokens, lengths = run(g, state, prefix, spk, jax.random.key(0), max_new_tokens=LA + 4, greedy=True,
                          min_ratio=0.0, max_ratio=100.0)
    tokens, lengths = np.asarray(tokens), np.asarray(lengths)
    want, want_len = np.asarray(batch["tokens"]), np.asarray(batch["tokens_len"])
    np.testing.assert_array_equal(lengths, want_len)  # EOS right after the last token
    for row in range(ROWS):
        np.testing.assert_array_equal(tokens[row, :want_len[row]], want[row, :want_len[row]])
        assert np.all(tokens[row, want_len[row]:] == -1)
