"""Guided attention (Tachibana et al. 2018, DC-TTS; ESPnet's Transformer-TTS applies it to a few heads):
a training-only loss that asks the attention from the audio slots to the text to advance along the diagonal,
audio slot t of T near text unit n of N where n/N ≈ t/T.

A decoder-only TTS model must find this monotonic alignment in its self-attention by itself; one this
small, on a few thousand utterances, barely does (docs/what_limits_quality.md: its free-running tokens
say no words even of its training sentences). The loss is the attention mass each guided head puts off
the diagonal, W[t, n] = 1 − exp(−(n/N − t/T)² / 2σ²), with the attention renormalised over the target
text's keys: the same relative weights as in the layer's softmax over every key, so the text the head
reads is shaped and how much it reads the text is left to the model.
"""
import jax
import jax.numpy as jnp


def diagonal_penalty(audio_len: jax.Array, text_len: jax.Array, n_audio: int, n_text: int,
                     sigma: float, audio_index: jax.Array | None = None) -> jax.Array:
    """W [B, n_audio, n_text] for audio lengths and text lengths [B] (slot centres, so 1 slot ↔ 1 unit
    costs nothing); `audio_index` [B, n_audio]: each slot's place among the audio slots (default its index)."""
    index = jnp.arange(n_audio)[None, :] if audio_index is None else audio_index
    t = (index + 0.5) / jnp.maximum(audio_len, 1)[:, None]
    n = (jnp.arange(n_text)[None, :] + 0.5) / jnp.maximum(text_len, 1)[:, None]
    return 1.0 - jnp.exp(-jnp.square(n[:, None, :] - t[:, :, None]) / (2.0 * sigma ** 2))


def guided_attention_loss(q: jax.Array, k: jax.Array, audio_valid: jax.Array, text_len: jax.Array,
                          heads: int, sigma: float) -> jax.Array:
    """Queries q [B, Ta, H, D] of the audio slots (valid where `audio_valid` [B, Ta], contiguous), keys
    k [B, Lt, K, D] of the text slots (the first `text_len` [B] valid) -> the mean, over valid audio slots
    and the first `heads` heads, of the attention mass off the diagonal (0 on it, → 1 far from it)."""
    h, kv = q.shape[2], k.shape[2]
    if not 0 < heads <= h:
        raise ValueError(f"guided attention heads must be in 1..{h} (the layer's heads), got {heads}")
    kh = k[:, :, jnp.arange(heads) // (h // kv)]                         # grouped-query: head i reads kv i // g
    logits = jnp.einsum("bthd,bnhd->bhtn", q[:, :, :heads], kh, preferred_element_type=jnp.float32)
    logits = logits * (q.shape[-1] ** -0.5)
    text_valid = jnp.arange(k.shape[1])[None, :] < text_len[:, None]
    attn = jax.nn.softmax(jnp.where(text_valid[:, None, None], logits, -1e30), axis=-1)
    w = diagonal_penalty(audio_valid.sum(1), text_len, q.shape[1], k.shape[1], sigma,
                         audio_index=jnp.cumsum(audio_valid, axis=1) - 1)
    off = jnp.sum(attn * w[:, None], axis=-1)                            # [B, heads, Ta]
    rows = (audio_valid & (text_len > 0)[:, None]).astype(jnp.float32)[:, None]
    return jnp.sum(off * rows) / jnp.maximum(rows.sum() * heads, 1.0)
