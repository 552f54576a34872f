"""Training task for the AR transformer with its jointly trained speaker encoder.

Each example: the target's text and audio tokens, and a reference utterance of the same speaker
(never the target itself: the pipeline guarantees it). The reference audio feeds the speaker encoder;
with probability `model.one_shot_prob` (and when it fits) the reference's transcript and tokens also
become the one-shot prompt in context. Next-token cross-entropy on target tokens and EOS only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from speech_jax.audio.mel import MelSpec
from speech_jax.models.ar_layout import TARGET, build_layout, pack_right, valid_slots
from speech_jax.models.ar_transformer import ARTransformer, flops_per_token
from speech_jax.models.speaker_encoder import speaker_encoder_flops
from speech_jax.train.ctc import masked_ctc_loss
from speech_jax.train.guided_attention import guided_attention_loss

# The step reads the target's tokens, never its audio: training batches need not decode it (data.target_audio).
TRAINS_ON_TARGET_AUDIO = False


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> ARTransformer:
    model = ARTransformer(config.model, MelSpec.from_config(config.mel), rngs=rngs)
    model.one_shot_prob = float(config.model.one_shot_prob)  # static, read by the loss
    return model


def packed_length(model: ARTransformer, shapes: dict) -> int | None:
    """Slots of the packed layout for a batch of these shapes (`model.pack_prompt_slots` >= 0), or None for
    the static layout."""
    slots = getattr(model, "pack_prompt_slots", -1)
    return None if slots < 0 else layout_length(shapes, slots)


def _lengths(batch: dict) -> dict:
    return {k: jnp.clip(batch[f"{k}_len"], 0, batch[ids].shape[1]) for k, ids in (
        ("text", "text_ids"), ("tokens", "tokens"), ("prompt_text", "prompt_text_ids"),
        ("prompt_tokens", "prompt_tokens"))}


def fitting_one_shot(model: ARTransformer, batch: dict, one_shot: jax.Array) -> jax.Array:
    """The one-shot rows that fit the packed layout (all of them in the static one); the others train
    zero-shot this step (2 % of one-shot rows at the demo's 96 prompt slots on varied_large)."""
    length = packed_length(model, {k: v.shape for k, v in batch.items()})
    if length is None:
        return one_shot
    n = _lengths(batch)
    return one_shot & (valid_slots(n["text"], n["tokens"], n["prompt_text"], n["prompt_tokens"]) <= length)


def _layout(model: ARTransformer, batch: dict, one_shot: jax.Array) -> tuple[dict, jax.Array]:
    """The layout, and the slot of each row's first target-text id [B]."""
    one_shot = fitting_one_shot(model, batch, one_shot)
    off = lambda n: jnp.where(one_shot, n, 0)  # noqa: E731  zero-shot rows: empty prompt segments
    layout = build_layout(batch["text_ids"], batch["text_len"], batch["tokens"], batch["tokens_len"],
                          batch["prompt_text_ids"], off(batch["prompt_text_len"]),
                          batch["prompt_tokens"], off(batch["prompt_tokens_len"]),
                          codebook_size=model.codebook_size, use_speaker=model.speaker != "none")
    length = packed_length(model, {k: v.shape for k, v in batch.items()})
    if length is None:  # the text segment follows the speaker slot and the prompt text's static Lp slots
        return layout, jnp.full(one_shot.shape, 1 + batch["prompt_text_ids"].shape[1], jnp.int32)
    layout = pack_right(layout, length)
    # Packed: the row's padding, then its speaker slot (when used) and prompt text, then the text.
    first_text = (length - jnp.sum(layout["valid"], axis=1) + int(model.speaker != "none")
                  + off(_lengths(batch)["prompt_text"]))
    return layout, first_text.astype(jnp.int32)


def corrupt_targets(layout: dict, rate: float, codebook_size: int, rng: jax.Array) -> dict:
    """The layout with each target token's input (never its label, never EOS) replaced by a uniformly
    drawn code at `rate`: teacher forcing shows only true history, free-running decoding mostly its own
    errors; noisy history asks the next token of the text and the prompt, not of the tokens before it."""
    hit_key, code_key = jax.random.split(rng)
    ids = layout["audio_ids"]
    target = (layout["kind"] == TARGET) & (ids < codebook_size)
    hit = target & jax.random.bernoulli(hit_key, rate, ids.shape)
    noise = jax.random.randint(code_key, ids.shape, 0, codebook_size, jnp.int32)
    return dict(layout, audio_ids=jnp.where(hit, noise, ids))


def _cross_entropy(logits, layout):
    mask = layout["loss_mask"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, layout["labels"])
    n = jnp.maximum(mask.sum(), 1.0)
    correct = (jnp.argmax(logits, -1) == layout["labels"]).astype(jnp.float32)
    eos = mask * (layout["labels"] == jnp.int32(logits.shape[-1] - 1))
    return (jnp.sum(ce * mask) / n, jnp.sum(correct * mask) / n,
            jnp.sum(correct * eos) / jnp.maximum(eos.sum(), 1.0), mask.sum())


def loss_slots(batch: dict) -> slice:
    """The static slots that can carry loss: the last prompt/SOS slot through the last target slot.

    The target segment (La tokens + EOS) closes the layout, and a slot's label is the next slot's id,
    so every `loss_mask` slot lies in the La + 1 slots before the final one."""
    n = batch["tokens"].shape[1] + 1
    return slice(-n - 1, -1)


def _forward(model: ARTransformer, batch: dict, one_shot: jax.Array, dropout_rng: jax.Array | None = None):
    """(token cross-entropy, token accuracy, EOS accuracy, target slots, {alignment loss: value})."""
    return token_loss(model, batch, model.speaker_embedding(batch["ref_audio"], batch["ref_len"]), one_shot,
                      dropout_rng=dropout_rng)


def token_loss(model: ARTransformer, batch: dict, spk: jax.Array, one_shot: jax.Array, aids: bool = True,
               dropout_rng: jax.Array | None = None):
    """`_forward` given the speaker slot spk [B, d_model] (PVC trains a voice through this very loss);
    `aids=False` leaves out the alignment aids (an empty dict); `dropout_rng` (training) turns the
    decoder's dropout and the target tokens' input noise on."""
    layout, first_text = _layout(model, batch, one_shot)
    if dropout_rng is not None and model.token_noise:
        layout = corrupt_targets(layout, model.token_noise, model.codebook_size, jax.random.fold_in(dropout_rng, 2))
    guided = aids and model.guided_attention_weight > 0
    out = model.hidden(layout, spk, model.guided_attention_layer if guided else None, dropout_rng)
    hidden, qk = out if guided else (out, None)
    # The output head and softmax only where the loss is taken (La + 1 of the S slots).
    slots = loss_slots(batch)
    hidden = hidden[:, slots]
    loss_mask = layout["loss_mask"][:, slots]
    out = _cross_entropy(model.logits(hidden), {"labels": layout["labels"][:, slots], "loss_mask": loss_mask})
    extra = {}
    # The slots predicting the target tokens and EOS read out the target's text.
    if aids and model.text_ctc_weight:
        logits, mask = model.text_ctc_logits(hidden, loss_mask)
        extra["text_ctc_loss"] = masked_ctc_loss(logits, mask, batch["text_ids"], batch["text_len"])[0]
    if guided:  # the same slots' attention to the target text
        q, k = qk
        lt = batch["text_ids"].shape[1]
        text_slots = jnp.clip(first_text[:, None] + jnp.arange(lt), 0, k.shape[1] - 1)
        extra["guided_attention_loss"] = guided_attention_loss(
            q[:, slots], jnp.take_along_axis(k, text_slots[:, :, None, None], axis=1), loss_mask,
            jnp.clip(batch["text_len"], 0, lt), model.guided_attention_heads, model.guided_attention_sigma)
    return (*out, extra)


def _aid_weights(model: ARTransformer) -> dict:
    return {"text_ctc_loss": model.text_ctc_weight, "guided_attention_loss": model.guided_attention_weight}


def loss_fn(model: ARTransformer, batch: dict, rng: jax.Array, step: jax.Array):
    del step
    available = batch["prompt_tokens_len"] > 0
    one_shot = fitting_one_shot(model, batch, jax.random.bernoulli(rng, model.one_shot_prob, available.shape)
                                & available)
    # fold_in: the one-shot draw above is the same with and without dropout.
    loss, acc, eos_acc, n, extra = _forward(model, batch, one_shot, jax.random.fold_in(rng, 1))
    metrics = dict(token_accuracy=acc, eos_accuracy=eos_acc, target_tokens=n,
                   one_shot_fraction=jnp.mean(one_shot.astype(jnp.float32)))
    if extra:
        metrics.update(token_loss=loss, **extra)
        loss = loss + sum(_aid_weights(model)[name] * value for name, value in extra.items())
    return loss, metrics


def eval_fn(model: ARTransformer, batch: dict) -> dict:
    """Teacher-forced loss and accuracy zero-shot, and one-shot where the reference fits as a prompt;
    speaker vectors for the verification diagnostic."""
    zero = jnp.zeros_like(batch["text_len"], bool)
    loss, acc, eos_acc, _, extra = _forward(model, batch, zero)
    out = dict(loss=loss, token_accuracy=acc, eos_accuracy=eos_acc, **extra)  # the token loss alone: comparable
    loss1, acc1, _, _, _ = _forward(model, batch, batch["prompt_tokens_len"] > 0)
    out.update(one_shot_loss=loss1, one_shot_token_accuracy=acc1)
    if model.speaker == "learnable":
        out["speaker_vector"] = model.speaker_encoder(batch["ref_audio"], batch["ref_len"])
    return out


def summarize_eval(batches: list, config) -> dict:
    """Equal error rate of cosine scores between the references' speaker vectors (distinct references)."""
    if not batches or "speaker_vector" not in batches[0][0]:
        return {}
    from speech_jax.eval.verification import speaker_eer
    vecs, spks, seen = [], [], set()
    for out, labels in batches:
        for v, s in zip(np.asarray(out["speaker_vector"]), np.asarray(labels["speaker_id"])):
            key = (int(s), np.round(v, 4).tobytes())
            if key not in seen:  # evaluation repeats its split to fill batches
                seen.add(key)
                vecs.append(v)
                spks.append(int(s))
    if len(set(spks)) < 2 or len(spks) == len(set(spks)):
        return {}
    return {"speaker_eer": float(speaker_eer(np.stack(vecs), np.asarray(spks)))}


def tokens_in_batch(batch: dict) -> int:
    """Non-padding target tokens (what the loss trains on, without EOS)."""
    return int(np.sum(batch["tokens_len"]))


def layout_length(batch_shapes: dict, pack_prompt_slots: int = -1) -> int:
    """Slots of the training layout: spk, prompt text, text, SOS + prompt tokens, target + EOS. Packed
    (`pack_prompt_slots` >= 0): room for any zero-shot row, and for a one-shot row whose prompt (text and
    tokens) adds at most that many slots to it."""
    lt, lp = batch_shapes["text_ids"][1], batch_shapes["prompt_text_ids"][1]
    pa, la = batch_shapes["prompt_tokens"][1], batch_shapes["tokens"][1]
    static = 1 + lp + lt + 1 + pa + la + 1
    return static if pack_prompt_slots < 0 else min(3 + lt + la + pack_prompt_slots, static)


def flops_per_step(config: ml_collections.ConfigDict, batch_shapes: dict) -> float:
    """3 × forward FLOPs of the transformer over the whole static layout (padding included, as computed),
    plus the speaker encoder's transformer over the reference frames.

    Causal self-attention is counted at half its T×T square (on average a token attends to half the
    sequence), MaxText's convention: an implementation that computes the masked half too does not get
    credit for it. The output head counts only at the La + 1 slots that carry loss (the rest would be
    discarded). The speaker encoder's attention is bidirectional: its whole square counts."""
    cfg, spec = config.model, MelSpec.from_config(config.mel)
    b = batch_shapes["text_ids"][0]
    seq = layout_length(batch_shapes, cfg.get("pack_prompt_slots", -1))
    head = 2 * cfg.d_model * (cfg.codebook_size + 2)
    fwd = seq * (flops_per_token(cfg, seq / 2) - head) + (batch_shapes["tokens"][1] + 1) * head
    if cfg.speaker == "learnable":
        frames = batch_shapes["ref_audio"][1] // spec.hop_length
        fwd += speaker_encoder_flops(cfg, spec, frames)
    return float(3 * b * fwd)
