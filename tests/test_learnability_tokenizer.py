"""The tokenizer learns: through the task's own loss, a tiny tokenizer overfit on four espeak utterances
transcribes them from its *quantised* tokens (greedy CTC over phonemes, two labels a token, CER <= 0.1)
while using many codes (perplexity well above 1). A head that does not read the codes, a CTC mask off by
the label rate, or a collapsed codebook cannot reach this."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from data_pipelines.espeak_tts.render import Utterance, render
from data_pipelines.espeak_tts.voices import Voice
from experiments.tokenizer import tiny
from speech_jax.eval.cer import ctc_collapse, error_rate
from speech_jax.text.phonemes import PhonemeVocab
from speech_jax.train.optim import make_optimizer
from speech_jax.train.tasks import tokenizer as task

SR = 16000
STEPS = 1000
TEXTS = ("The cat sat on the warm mat.", "Seven green boats left early.",
         "Bring me the blue cup, please.", "We walked home after dinner.")


def _batch():
    voice = Voice("en", "m3", 50, 165)
    wavs = [render(Utterance(f"u{i}", "train", voice, t), SR).astype(np.float32) / 32768 for i, t in enumerate(TEXTS)]
    vocab = PhonemeVocab.build([(t, "en") for t in TEXTS])
    labels = [vocab.encode(t, "en") for t in TEXTS]
    total = max(w.size for w in wavs)
    audio = np.zeros((len(wavs), total), np.float32)
    ids = np.zeros((len(wavs), max(map(len, labels))), np.int32)
    for i, (w, y) in enumerate(zip(wavs, labels)):
        audio[i, :w.size], ids[i, :len(y)] = w, y
    batch = dict(audio=audio, audio_len=np.asarray([w.size for w in wavs], np.int32), text_ids=ids,
                 text_len=np.asarray([len(y) for y in labels], np.int32))
    return batch, vocab


@pytest.fixture(scope="module")
def overfit():
    batch, vocab = _batch()
    config = tiny.get_config()
    config.model.update(dict(d_model=96, num_layers=2, mlp_dim=192, codebook_size=64, ctc_rate=2, ctc_weight=1.0,
                             text_vocab_size=vocab.vocab_size))
    config.optim.update(dict(learning_rate=4e-3, warmup_steps=50))
    model = task.build_model(config, nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, _ = make_optimizer(config.optim, STEPS)  # the training loop's AdamW, clipping and schedule

    @jax.jit
    def step(params, rest, opt, rng):
        def loss_of(p):
            m = nnx.merge(graphdef, p, rest, copy=True)  # the loss updates the VQ's EMA state
            loss, metrics = task.loss_fn(m, batch, rng, jnp.int32(0))
            return loss, (metrics, nnx.state(m, nnx.Not(nnx.Param)))
        (_, (metrics, rest)), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), rest, opt, metrics

    opt = tx.init(params)
    key = jax.random.key(0)
    for i in range(STEPS):
        params, rest, opt, metrics = step(params, rest, opt, jax.random.fold_in(key, i))
    out = jax.jit(task.eval_fn)(nnx.merge(graphdef, params, rest), batch)
    return batch, vocab, jax.device_get(out)


def test_ctc_on_the_tokens_transcribes_the_training_utterances(overfit):
    batch, vocab, out = overfit
    cers = []
    for pred, n, y, m in zip(out["ctc_pred"], out["ctc_pred_len"], batch["text_ids"], batch["text_len"]):
        hyp = vocab.decode(ctc_collapse(pred[:n]))
        cers.append(error_rate(hyp, vocab.decode(y[:m])))
    assert out["ctc_feasible"] == 1.0
    assert np.mean(cers) <= 0.1 and max(cers) <= 0.2, cers


def test_the_codes_are_used(overfit):
    *_, out = overfit
    assert out["perplexity"] > 16, out["perplexity"]
    assert out["mel_loss"] < 0.6, out["mel_loss"]
