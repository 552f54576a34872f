"""The tokenizer learns: through the task's own loss, a tiny tokenizer overfit on four espeak utterances
(tests/overfit.py) transcribes them from its *quantised* tokens (greedy CTC over phonemes, two labels a
token, CER <= 0.1) while using many codes (perplexity well above 1). A head that does not read the codes, a CTC mask off by
the label rate, or a collapsed codebook cannot reach this."""
import numpy as np
import pytest

from speech_jax.eval.cer import ctc_collapse, error_rate


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
