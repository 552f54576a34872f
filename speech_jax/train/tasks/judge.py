"""Training task for the intelligibility judge: a CTC recogniser of espeak's phonemes (`data.text_units`).

Its validation CER (phoneme error rate, greedy CTC) on seen speakers, and on `test_unseen` (held-out
voices) through `data.extra_eval_splits`, says how far its transcripts of synthesised speech can be trusted.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.eval.cer import ctc_token_error_rate
from speech_jax.models.ctc_recognizer import CtcRecognizer
from speech_jax.text.phonemes import PhonemeVocab
from speech_jax.train.ctc import masked_ctc_loss


def resolve_config(config) -> None:
    """The judge hears phonemes: `data.text_units` must say so (the loop then fixes the inventory)."""
    if config.data.get("text_units") != "phonemes":
        raise ValueError(f"the judge learns espeak phonemes: set data.text_units='phonemes' "
                         f"(got {config.data.get('text_units')!r})")


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> CtcRecognizer:
    vocab = PhonemeVocab(config.data.phonemes)
    return CtcRecognizer(config.model, MelSpec.from_config(config.mel), vocab.vocab_size, rngs=rngs)


def _forward(model: CtcRecognizer, batch: dict, rng):
    mel, frame_mask = model.features(batch["audio"], batch["audio_len"])
    logits, mask = model(mel, frame_mask, rng=rng)
    loss, feasible = masked_ctc_loss(logits, mask, batch["text_ids"], batch["text_len"])
    return loss, dict(loss=loss, ctc_feasible=feasible), logits, mask


def loss_fn(model: CtcRecognizer, batch: dict, rng: jax.Array, step: jax.Array):
    del step
    loss, metrics, _, _ = _forward(model, batch, rng)
    return loss, metrics


def eval_fn(model: CtcRecognizer, batch: dict) -> dict:
    """CTC loss without augmentation, plus the greedy ids for the host-side CER."""
    _, metrics, logits, mask = _forward(model, batch, None)
    metrics["ctc_pred"] = jnp.argmax(logits, -1).astype(jnp.int32)
    metrics["ctc_pred_len"] = mask.sum(1).astype(jnp.int32)
    return metrics


def host_eval(outputs: dict, batch: dict, tokenizer=None, config=None) -> dict:
    """Greedy-CTC phoneme error rate (one label is one IPA character, so it is the phoneme string's CER)."""
    del tokenizer, config
    return {"cer": ctc_token_error_rate(outputs["ctc_pred"], outputs["ctc_pred_len"], batch["text_ids"],
                                        batch["text_len"])}


def tokens_in_batch(batch: dict) -> int:
    """Non-padding labels (phonemes) in the batch."""
    return int(np.sum(batch["text_len"]))


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """Analytic training FLOPs of one step: 3 × forward matmul/conv FLOPs (STFT excluded)."""
    from speech_jax.train.tasks.tokenizer import _transformer_flops
    cfg, spec = config.model, MelSpec.from_config(config.mel)
    b, t = batch_shapes["audio"][:2]
    frames = t // spec.hop_length
    steps = frames // cfg.subsample
    d, vocab = cfg.d_model, PhonemeVocab(config.data.phonemes).vocab_size
    fwd = (2 * frames * cfg.conv_kernel * spec.n_mels * d   # conv_in
           + 2 * steps * 2 * cfg.subsample * d * d          # strided conv
           + _transformer_flops(cfg, steps)
           + 2 * steps * d * vocab)                         # CTC head
    return float(3 * b * fwd)
