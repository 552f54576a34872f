"""The AR transformer's one sequence layout: static segment lengths, padding made invisible.

Five segments, each of static length; an example row (Lp 4, Lt 5, Pa 4, La 5) of a one-shot layout
with 2 prompt-text ids, 3 text ids, 2 prompt tokens and 3 target tokens:

  segment     spk  prompt text, Lp        text, Lt         SOS+prompt, 1+Pa       target+EOS, La+1
  slot      |spk | pt  pt  _   _  | tx  tx  tx  _   _  | _   _  SOS  p0  p1 | t0  t1  t2 EOS  _   _  |
  kind      | 1  | 2   2   0   0  | 2   2   2   0   0  | 0   0   3   3   3  | 4   4   4   4   0   0  |
  loss_mask | .  | .   .   .   .  | .   .   .   .   .  | .   .   .   .   x  | x   x   x   .   .   .  |

Inputs are right-padded as the pipeline delivers them; the SOS + prompt-token segment is re-packed
left-padded. `_` is a padding slot (kind 0, `valid` False): never attended to as a key, and RoPE
positions are `cumsum(valid) - 1`, so every valid slot computes exactly what it would in the packed
sequence `[spk] [prompt text] [text] [SOS] [prompt tokens] [target tokens] [EOS]`. Left-padding puts
the last prompt token (or SOS without a prompt) right before the first target slot, so generation
continues right after a `build_prefix` layout.

Packed (`pack_right`): the same slots with every row's valid ones moved, in order, to the end of fewer
slots, padding before them. Half of a static layout's slots are padding (zero-shot rows fill no prompt
segment, texts rarely their pad); with positions and labels carried along, every valid slot computes what it
did, and the target segment still closes each row.

Zero-shot: no prompt text, no prompt tokens (those segments are all padding). One-shot: the prompt
utterance's transcript and audio tokens. `use_speaker=False` (speaker "none") leaves the spk slot invalid.

Ids: text ids (BPE, 0 = pad) and audio ids 0..K-1 with SOS = K, EOS = K+1 (audio vocabulary K+2).
The loss is next-token cross-entropy at slots whose *next* slot is a target token or EOS
(`loss_mask`), i.e. from the last SOS/prompt slot through the last target token.
"""
import jax
import jax.numpy as jnp

PAD, SPK, TEXT, AUDIO, TARGET = 0, 1, 2, 3, 4


def _lengths_mask(length: jax.Array, size: int) -> jax.Array:
    return jnp.arange(size)[None, :] < jnp.clip(length, 0, size)[:, None]


def _shift_right(x: jax.Array, shift: jax.Array) -> jax.Array:
    """out[b, j] = x[b, j - shift[b]] (0 outside): a per-row shift as a masked sum of one-hots."""
    n = x.shape[1]
    src = jnp.arange(n)[None, :, None] + shift[:, None, None]
    hit = src == jnp.arange(n)[None, None, :]                          # [B, src, dst]
    return jnp.sum(jnp.where(hit, x[:, :, None], 0), axis=1).astype(x.dtype)


def _segment(kind: int, valid: jax.Array, text=None, audio=None) -> dict:
    zeros = jnp.zeros(valid.shape, jnp.int32)
    return dict(text_ids=zeros if text is None else jnp.where(valid, text, 0).astype(jnp.int32),
                audio_ids=zeros if audio is None else jnp.where(valid, audio, 0).astype(jnp.int32),
                kind=jnp.where(valid, kind, PAD).astype(jnp.int32), valid=valid)


def _prefix_segments(text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens,
                     prompt_tokens_len, codebook_size, use_speaker) -> list[dict]:
    b, pa = prompt_tokens.shape
    spk = _segment(SPK, jnp.full((b, 1), use_speaker, bool))
    prompt_text = _segment(TEXT, _lengths_mask(prompt_text_len, prompt_text_ids.shape[1]), text=prompt_text_ids)
    text = _segment(TEXT, _lengths_mask(text_len, text_ids.shape[1]), text=text_ids)
    # [SOS, p0 .. p(n-1), pad ..] right-padded, then shifted right by Pa - n: left-padded.
    n = jnp.clip(prompt_tokens_len, 0, pa)
    content = jnp.concatenate([jnp.full((b, 1), codebook_size, jnp.int32), prompt_tokens.astype(jnp.int32)], 1)
    content_valid = _lengths_mask(n + 1, pa + 1)
    shift = pa - n
    audio = _shift_right(jnp.where(content_valid, content, 0), shift)
    valid = _shift_right(content_valid.astype(jnp.int32), shift) > 0
    return [spk, prompt_text, text, _segment(AUDIO, valid, audio=audio)]


def _target_segment(tokens, tokens_len, codebook_size) -> dict:
    b, la = tokens.shape
    m = jnp.clip(tokens_len, 0, la)
    j = jnp.arange(la + 1)[None, :]
    padded = jnp.concatenate([tokens.astype(jnp.int32), jnp.zeros((b, 1), jnp.int32)], 1)
    ids = jnp.where(j == m[:, None], codebook_size + 1, padded)   # EOS right after the last token
    return _segment(TARGET, j <= m[:, None], audio=ids)


def _assemble(segments: list[dict]) -> dict:
    out = {k: jnp.concatenate([s[k] for s in segments], axis=1) for k in segments[0]}
    out["positions"] = jnp.maximum(jnp.cumsum(out["valid"].astype(jnp.int32), axis=1) - 1, 0)
    return out


def build_layout(text_ids, text_len, tokens, tokens_len, prompt_text_ids, prompt_text_len,
                 prompt_tokens, prompt_tokens_len, *, codebook_size: int, use_speaker: bool = True) -> dict:
    """The training layout, S = 1 + Lp + Lt + 1 + Pa + La + 1 slots.

    Inputs are right-padded: text_ids [B,Lt], tokens [B,La], prompt_text_ids [B,Lp],
    prompt_tokens [B,Pa], each with its lengths [B] (zero-shot: prompt lengths 0).
    Returns text_ids, audio_ids, kind, valid, positions, labels and loss_mask, all [B, S]:
    labels[i] = audio id at slot i+1 where that slot is a target token or EOS (loss_mask), else 0.
    """
    segs = _prefix_segments(text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens,
                            prompt_tokens_len, codebook_size, use_speaker)
    out = _assemble(segs + [_target_segment(tokens, tokens_len, codebook_size)])
    b = text_ids.shape[0]
    loss_mask = jnp.concatenate([out["kind"][:, 1:] == TARGET, jnp.zeros((b, 1), bool)], 1)
    next_ids = jnp.concatenate([out["audio_ids"][:, 1:], jnp.zeros((b, 1), jnp.int32)], 1)
    out["labels"] = jnp.where(loss_mask, next_ids, 0)
    out["loss_mask"] = loss_mask
    return out


def build_prefix(text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens, prompt_tokens_len,
                 *, codebook_size: int, use_speaker: bool = True) -> dict:
    """The inference prefix: `build_layout` without the target segment (S = 1 + Lp + Lt + 1 + Pa).

    Its last slot is always valid (SOS or the last prompt token); generated tokens take slots S, S+1, …
    at positions valid.sum(1), +1, …. Also returns `text_len` [B] (the target text's length, for the
    decoder's length rules)."""
    out = _assemble(_prefix_segments(text_ids, text_len, prompt_text_ids, prompt_text_len, prompt_tokens,
                                     prompt_tokens_len, codebook_size, use_speaker))
    out["text_len"] = jnp.clip(text_len, 0, text_ids.shape[1]).astype(jnp.int32)
    return out


def valid_slots(text_len, tokens_len, prompt_text_len, prompt_tokens_len) -> jax.Array:
    """[B] an upper bound on a row's valid slots (the speaker slot counted whether used or not)."""
    return 3 + text_len + tokens_len + prompt_text_len + prompt_tokens_len


def pack_right(layout: dict, length: int) -> dict:
    """A `build_layout` layout in `length` slots: each row's valid slots in their order at its end, the
    padding before them. A row with more than `length` valid slots would lose its first ones: callers keep
    rows within it (`valid_slots`)."""
    s = layout["valid"].shape[1]
    order = jnp.argsort(layout["valid"], axis=1, stable=True)[:, s - length:]  # stable: padding, then valid
    return {k: jnp.take_along_axis(v, order, axis=1) for k, v in layout.items()}
