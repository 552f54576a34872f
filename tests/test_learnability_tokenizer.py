"""The tokenizer learns: through the task's own loss, a tiny tokenizer overfit on four espeak utterances
(tests/overfit.py) transcribes them from its *quantised* tokens (greedy CTC over phonemes, two labels a
token, CER <= 0.1) while using many codes (perplexity well above 1). A head that does not read the codes, a CTC mask off by
the label rate, or a collapsed codebook cannot reach this."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from overfit import restore
from speech_jax.eval.cer import ctc_collapse, error_rate
from speech_jax.models.audio_tokenizer import encode
from speech_jax.train.tasks import tokenizer as task


@pytest.fixture(scope="module")
def overfit(overfit_tokenizer):
    return overfit_tokenizer["batch"], overfit_tokenizer["vocab"], overfit_tokenizer["eval"]


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


def test_its_ctc_head_scores_each_text_best_over_its_own_tokens(overfit_tokenizer):
    """Best-of-n synthesis ranks AR samples by `text_nll`: over an utterance's own tokens its own sentence must
    be likelier than the other, by a margin (a head reading the wrong frames, or labels off by one, ties)."""
    tok = restore(task.build_model, overfit_tokenizer["config"], overfit_tokenizer["state"])
    batch = overfit_tokenizer["batch"]
    ids, mask = jax.jit(encode)(tok, jnp.asarray(batch["audio"]), jnp.asarray(batch["audio_len"]))
    n = len(batch["text_len"])
    rows, texts = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)  # (tokens of i, text of j)
    nll = jax.jit(tok.text_nll)(ids[rows], mask[rows], jnp.asarray(batch["text_ids"])[texts],
                                jnp.asarray(batch["text_len"])[texts])
    nll = np.asarray(nll).reshape(n, n)
    labels = [tuple(y[:m]) for y, m in zip(batch["text_ids"], batch["text_len"])]
    same = np.array([[a == b for b in labels] for a in labels])  # the clips say two sentences in two voices
    assert np.all(np.diag(nll) < 1.0), nll
    assert np.all(np.diag(nll) + 1.0 < np.where(same, np.inf, nll).min(1)), nll
