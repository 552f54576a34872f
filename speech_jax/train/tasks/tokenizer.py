"""Training task for the audio tokenizer: mel reconstruction + VQ terms + λ·CTC on its text units."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.audio.vtlp import random_factors, warp_log_mel
from speech_jax.eval.cer import ctc_collapse, ctc_token_error_rate, edit_distance
from speech_jax.models.audio_tokenizer import AudioTokenizer
from speech_jax.train.ctc import masked_ctc_loss


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> AudioTokenizer:
    return AudioTokenizer(config.model, MelSpec.from_config(config.mel), rngs=rngs)


def _forward(model: AudioTokenizer, batch: dict, rng, train: bool):
    mel, frame_mask = model.features(batch["audio"], batch["audio_len"])
    if train and model.vtlp:  # the input and its reconstruction target alike: another voice saying the same
        mel = warp_log_mel(mel, random_factors(jax.random.fold_in(rng, 1), mel.shape[0], model.vtlp), model.spec)
    out = model(mel, frame_mask, rng=rng, train=train)
    m = frame_mask.astype(jnp.float32)[..., None]
    denom = jnp.maximum(m.sum() * mel.shape[-1], 1.0)
    diff = (out["mel_pred"] - mel) * m
    mel_l1 = jnp.sum(jnp.abs(diff)) / denom
    mel_l2 = jnp.sum(diff * diff) / denom

    # CTC over text units on the quantised 25 Hz sequence (ctc_rate labels a token); blank = 0 = pad id.
    ctc, ok = masked_ctc_loss(out["ctc_logits"], out["ctc_mask"], batch["text_ids"], batch["text_len"])

    vq = out["vq"]
    vq_loss = model.commitment * vq["commit_loss"] + model.codebook_weight * vq["codebook_loss"]
    loss = model.mel_weight * (mel_l1 + model.mel_l2_weight * mel_l2) + vq_loss + model.ctc_weight * ctc
    metrics = dict(loss=loss, mel_loss=mel_l1, mel_l2=mel_l2, vq_loss=vq_loss, ctc_loss=ctc,
                   ctc_feasible=ok, **vq)
    if model.ctc_encoder_weight:  # the same labels on the features before quantisation
        ctc_encoder, _ = masked_ctc_loss(out["ctc_encoder_logits"], out["ctc_mask"], batch["text_ids"],
                                         batch["text_len"])
        loss = loss + model.ctc_encoder_weight * ctc_encoder
        metrics.update(loss=loss, ctc_encoder_loss=ctc_encoder)
    return loss, metrics, out


def loss_fn(model: AudioTokenizer, batch: dict, rng: jax.Array, step: jax.Array):
    """Scalar loss and scalar metrics; updates the VQ's EMA state in place (non-Param variables)."""
    del step
    loss, metrics, _ = _forward(model, batch, rng, train=True)
    return loss, metrics


def eval_fn(model: AudioTokenizer, batch: dict) -> dict:
    """Teacher-forced metrics (no state updates) plus greedy CTC ids for host-side CER."""
    _, metrics, out = _forward(model, batch, None, train=False)
    metrics["ctc_pred"] = jnp.argmax(out["ctc_logits"], -1).astype(jnp.int32)
    metrics["ctc_pred_len"] = out["ctc_mask"].sum(1).astype(jnp.int32)
    return metrics


def ctc_char_error_rate(pred, pred_len, labels, label_len, tokenizer) -> float:
    """Greedy CTC decode → text via the text units (BPE or phonemes) → character error rate against the
    transcript's."""
    errors = total = 0
    for p, pl, y, yl in zip(np.asarray(pred), np.asarray(pred_len), np.asarray(labels), np.asarray(label_len)):
        hyp = tokenizer.decode(ctc_collapse(p[:pl]))
        ref = tokenizer.decode([int(t) for t in y[:yl]])
        errors += edit_distance(list(hyp), list(ref))
        total += len(ref)
    return errors / max(total, 1)


def host_eval(outputs: dict, batch: dict, tokenizer=None, config=None) -> dict:
    """Content check of the tokens: greedy-CTC token and character error rates on the validation batch."""
    args = (outputs["ctc_pred"], outputs["ctc_pred_len"], batch["text_ids"], batch["text_len"])
    out = {"ctc_token_error_rate": ctc_token_error_rate(*args)}
    if tokenizer is not None:
        out["ctc_cer"] = ctc_char_error_rate(*args, tokenizer)
    return out


def _transformer_flops(cfg, seq: int) -> float:
    d, h, kv = cfg.d_model, cfg.num_heads, cfg.num_kv_heads
    hd = d // h
    proj = 2 * seq * d * hd * (2 * h + 2 * kv)   # q, k, v, o
    attn = 2 * 2 * seq * seq * h * hd            # q·k and p·v
    mlp = 2 * seq * 3 * d * cfg.mlp_dim
    return cfg.num_layers * (proj + attn + mlp)


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """Analytic training FLOPs of one step: 3 × forward matmul/conv FLOPs (STFT excluded)."""
    cfg, spec = config.model, MelSpec.from_config(config.mel)
    b, t = batch_shapes["audio"][:2]
    frames = t // spec.hop_length
    tokens = frames // 2
    d, k, m = cfg.d_model, cfg.conv_kernel, spec.n_mels
    fwd = (2 * frames * k * m * d                  # enc_in
           + 2 * tokens * 4 * d * d                # strided down conv
           + _transformer_flops(cfg, tokens)
           + 2 * tokens * d * cfg.code_dim * 2     # VQ projections
           + 2 * tokens * cfg.code_dim * cfg.codebook_size  # distances
           + 2 * tokens * d * cfg.text_vocab_size * cfg.get("ctc_rate", 1)
           * (1 + bool(cfg.get("ctc_encoder_weight", 0.0)))  # CTC heads
           + 2 * tokens * k * d * d                # dec_in
           + 2 * tokens * 4 * d * d                # transposed up conv (non-zero taps)
           + _transformer_flops(cfg, frames)
           + 2 * frames * d * m)                   # mel out
    return float(3 * b * fwd)
