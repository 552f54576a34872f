"""Token sampling for AR decoding: pure jnp, batched, jit-able.

Guards against the usual AR TTS failures (endless repetition, missing or premature EOS):
  * top-k then top-p (nucleus) filtering of the temperature-scaled distribution;
  * repetition-aware sampling (as in the open peers): if the token drawn from the filtered
    distribution already occurs at least `rep_threshold * rep_window` times among the last
    `rep_window` generated tokens, it is redrawn from the full (temperature-only) distribution.
    `rep_threshold` is a ratio of the window (peers' default 0.1 with window 10: any repeat);
  * length rules: EOS is banned before a minimum length and forced at a maximum, both proportional
    to the text length.
"""
import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Top-k (0 = off), then keep the smallest set of most likely tokens whose probability reaches
    top_p (1.0 = off); everything else gets -inf. logits [B, V]; top_k static, top_p may be traced."""
    neg = jnp.array(-jnp.inf, logits.dtype)
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits >= kth, logits, neg)
    if not (isinstance(top_p, (int, float)) and top_p >= 1.0):  # a traced top_p always filters
        ranked = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ranked, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs   # mass of strictly more likely tokens
        keep = before < top_p                         # the most likely token is always kept
        cutoff = jnp.min(jnp.where(keep, ranked, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= cutoff, logits, neg)
    return logits


def sample_token(logits: jax.Array, rng: jax.Array, *, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, history: jax.Array | None = None, rep_window: int = 0,
                 rep_threshold: float = 0.1, greedy: bool = False) -> jax.Array:
    """logits [B, V] -> token ids [B] int32.

    history [B, W] holds the most recent generated tokens, newest last (-1 = empty); the last
    `rep_window` (<= W, static) columns are checked for repetition. greedy: argmax, nothing else."""
    logits = logits.astype(jnp.float32)
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    scaled = logits / jnp.maximum(temperature, 1e-6)
    k_filtered, k_full = jax.random.split(rng)
    token = jax.random.categorical(k_filtered, filter_logits(scaled, top_k, top_p), axis=-1)
    if history is not None and rep_window > 0:
        recent = history[:, -rep_window:]
        count = jnp.sum(recent == token[:, None], axis=-1)
        repeated = count.astype(jnp.float32) >= rep_threshold * rep_window
        token = jnp.where(repeated, jax.random.categorical(k_full, scaled, axis=-1), token)
    return token.astype(jnp.int32)


def apply_length_rules(logits: jax.Array, step, min_len: jax.Array, max_len: jax.Array,
                       eos_id: int) -> jax.Array:
    """For the token at 0-based `step`: EOS gets -inf while step < min_len; every other token gets -inf
    once step >= max_len - 1 (EOS forced), so a sequence has min_len .. max_len - 1 tokens before EOS."""
    is_eos = jnp.arange(logits.shape[-1]) == eos_id
    forced = (step >= max_len - 1)[:, None]
    banned = ((step < min_len)[:, None] & ~forced & is_eos) | (forced & ~is_eos)
    return jnp.where(banned, jnp.array(-jnp.inf, logits.dtype), logits)


def length_bounds(text_len: jax.Array, min_ratio: float = 2.0, max_ratio: float = 20.0,
                  max_tokens: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(min_len, max_len) [B] int32 from the text length in tokens: floor(min_ratio · n) and
    ceil(max_ratio · n) (at least 1), max_len capped by the static `max_tokens` and min_len by max_len - 1."""
    n = jnp.asarray(text_len).astype(jnp.float32)
    max_len = jnp.maximum(jnp.ceil(max_ratio * n).astype(jnp.int32), 1)
    if max_tokens is not None:
        max_len = jnp.minimum(max_len, max_tokens)
    min_len = jnp.minimum(jnp.floor(min_ratio * n).astype(jnp.int32), max_len - 1)
    return min_len, max_len
