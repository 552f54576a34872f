"""AR decoding with a KV cache: prefill the prefix layout, then one token per `lax.while_loop` step.

`generate` is a pure function of (graphdef, state, inputs, rng), so
`jax.jit(generate, static_argnums=0, static_argnames=STATIC_ARGNAMES)` compiles it once per shape.
The loop stops as soon as every row has emitted EOS (or after max_new_tokens steps). Each row keeps its
own finished flag; a finished row keeps feeding EOS and its outputs are discarded.
`greedy_decode_uncached` recomputes the whole sequence every step: the reference the cache must match.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.infer import ctc_guidance
from speech_jax.infer.sampling import apply_length_rules, length_bounds, sample_token
from speech_jax.models.ar_layout import TARGET

STATIC_ARGNAMES = ("max_new_tokens", "top_k", "top_p", "rep_window", "greedy")


def _merge(graphdef, state):
    return nnx.merge(graphdef, *state) if isinstance(state, (tuple, list)) else nnx.merge(graphdef, state)


def generate(graphdef, state, prefix: dict, spk: jax.Array, rng: jax.Array, *, max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 25, top_p: float = 0.8, rep_window: int = 10,
             rep_threshold: float = 0.1, greedy: bool = False, min_ratio: float = 2.0,
             max_ratio: float = 20.0, guidance: dict | None = None) -> tuple[jax.Array, jax.Array]:
    """Samples audio tokens after `prefix` (from `build_prefix`, with its `text_len`).

    graphdef, state: `nnx.split(model)` of an `ARTransformer` (state: one State or a tuple of them).
    spk [B, d] from `model.speaker_embedding`. Length rules: at least min_ratio · text_len tokens,
    EOS forced by max_ratio · text_len (capped by max_new_tokens). SOS is never sampled.
    `guidance` (CTC guidance, speech_jax/infer/ctc_guidance.py): {"table": the tokenizer's [K, r, V],
    "labels": [B, S], "label_len": [B], "weight": [], "progress": []}, or None (the paper's sampling).
    Returns tokens [B, max_new_tokens] (audio ids, -1 from EOS on) and lengths [B] (tokens before EOS).
    """
    model = _merge(graphdef, state)
    b, s0 = prefix["valid"].shape
    n = max_new_tokens
    logits, cache = model.prefill(prefix, spk, model.init_cache(b, s0 + n))
    first_position = jnp.sum(prefix["valid"], axis=1).astype(jnp.int32)
    min_len, max_len = length_bounds(prefix["text_len"], min_ratio, max_ratio, n)
    eos, sos = model.eos_id, model.sos_id
    if guidance is not None:
        states = ctc_guidance.extended_labels(guidance["labels"], guidance["label_len"], guidance["table"])

    def cond(c):
        return (c["step"] < n) & ~jnp.all(c["finished"])

    def body(c):
        step = c["step"]
        lg = c["logits"].at[:, sos].set(-jnp.inf)
        lg = apply_length_rules(lg, step, min_len, max_len, eos)
        if guidance is not None:
            lg, after = ctc_guidance.guide(lg, c["alpha"], guidance["table"], states, guidance["weight"],
                                           guidance["progress"])
        tok = sample_token(lg, jax.random.fold_in(rng, step), temperature=temperature, top_k=top_k,
                           top_p=top_p, history=c["history"], rep_window=rep_window,
                           rep_threshold=rep_threshold, greedy=greedy)
        tok = jnp.where(c["finished"], eos, tok)
        done = c["finished"] | (tok == eos)
        tokens = jax.lax.dynamic_update_slice(c["tokens"], jnp.where(done, -1, tok)[:, None], (0, step))
        history = jnp.concatenate([c["history"][:, 1:], tok[:, None]], axis=1)
        logits, cache = model.decode_step(tok, first_position + step, s0 + step, c["cache"])
        out = dict(step=step + 1, logits=logits, cache=cache, tokens=tokens, finished=done,
                   lengths=c["lengths"] + (~done).astype(jnp.int32), history=history)
        if guidance is not None:
            out["alpha"] = ctc_guidance.select(after, c["alpha"], tok, model.codebook_size)
        return out

    init = dict(step=jnp.zeros((), jnp.int32), logits=logits, cache=cache,
                tokens=jnp.full((b, n), -1, jnp.int32), finished=jnp.zeros((b,), bool),
                lengths=jnp.zeros((b,), jnp.int32), history=jnp.full((b, max(rep_window, 1)), -1, jnp.int32))
    if guidance is not None:
        init["alpha"] = ctc_guidance.initial_alpha(states)
    out = jax.lax.while_loop(cond, body, init)
    return out["tokens"], out["lengths"]


def greedy_decode_uncached(model, prefix: dict, spk: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Reference decoder: n greedy audio tokens (SOS and EOS excluded), re-running the whole sequence
    every step. The prefix gets n invisible target slots up front (one shape, one compile); step i
    fills slot S0 + i. Returns tokens [B, n] and the raw next-token logits of each step [B, n, V]."""
    b, s0 = prefix["valid"].shape
    grow = dict(text_ids=jnp.zeros((b, n), jnp.int32), audio_ids=jnp.zeros((b, n), jnp.int32),
                kind=jnp.zeros((b, n), jnp.int32), valid=jnp.zeros((b, n), bool),
                positions=jnp.zeros((b, n), jnp.int32))
    layout = {k: jnp.concatenate([prefix[k], grow[k]], axis=1) for k in grow}
    first_position = jnp.sum(prefix["valid"], axis=1).astype(jnp.int32)
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda st, lay: nnx.merge(graphdef, st)(lay, spk))
    tokens, logits = [], []
    for i in range(n):
        lg = forward(state, layout)[:, s0 - 1 + i]
        tok = jnp.argmax(lg[:, :model.codebook_size], axis=-1).astype(jnp.int32)
        tokens.append(tok)
        logits.append(lg)
        slot = s0 + i
        layout = dict(layout, audio_ids=layout["audio_ids"].at[:, slot].set(tok),
                      kind=layout["kind"].at[:, slot].set(TARGET), valid=layout["valid"].at[:, slot].set(True),
                      positions=layout["positions"].at[:, slot].set(first_position + i))
    return jnp.stack(tokens, 1), jnp.stack(logits, 1)
