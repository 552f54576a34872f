"""CTC guidance: the tokenizer's CTC head steers the AR's sampling toward tokens that say the text.

The tokenizer reads each audio code as `r` frames of text-unit posteriors (its CTC head over the code's
embedding; the head trains on the codes, so it reads the AR's tokens as it reads its own). While the AR
samples, the CTC forward variables of the line's labels over the tokens so far say how likely those tokens
are to have said some beginning of the text. Each candidate code k extends them by its r frames; its score
is that prefix log-likelihood plus `progress` nats for each unit said (expected under the forward
variables), relative to the best candidate's (<= 0), and `weight` times it is added to the AR's logit of k.
Codes that read as a wrong text unit lose probability, codes that say the next one gain over pauses; EOS
keeps its logit (the best code's score is 0), and the length rules still bound it. On the 30-minute demo's
stages: judge CER 0.36 against 0.54 unguided (docs/what_limits_quality.md, "CTC guidance").

Best of n (`Synthesizer`, `candidates`) scores whole sequences with the same head after sampling; guidance
acts on every step instead, where a wrong unit costs the rest of the line. Written here because decoding
with a CTC prefix score (as in hybrid CTC/attention ASR decoders) has no JAX library to call; the
recursion is the one `optax.ctc_loss` computes over a whole sequence, advanced a token at a time.
"""
import jax
import jax.numpy as jnp

NEG = -1e30  # log 0 that stays finite under sums (jnp.inf would give nan in inf - inf)


def code_table(tokenizer) -> jax.Array:
    """[K, r, V] log-probabilities of the text units (blank 0) the tokenizer's CTC head gives each code."""
    ids = jnp.arange(tokenizer.vq.k)[None]
    logits, _ = tokenizer.ctc_logits(tokenizer.vq.lookup(ids), jnp.ones(ids.shape, bool))
    return jax.nn.log_softmax(logits.reshape(tokenizer.vq.k, tokenizer.ctc_rate, -1), axis=-1)


def extended_labels(labels: jax.Array, label_len: jax.Array, table: jax.Array | None = None) -> dict:
    """Labels [B, S] (first `label_len` valid, ids > 0) -> the CTC states [B, 2S+1]: blank, l1, blank, l2, ...;
    `valid` (within 2·label_len + 1) and `skip` (a state reachable from two back: a label unlike the one
    before it); with the code table [K, r, V] also `emit` [K, r, B, 2S+1], each code's frames' probability of
    each state's unit (the same at every step, so taken once)."""
    b, s = labels.shape
    ext = jnp.zeros((b, 2 * s + 1), jnp.int32).at[:, 1::2].set(labels)
    valid = jnp.arange(2 * s + 1)[None] < 2 * label_len[:, None] + 1
    before = jnp.pad(ext, ((0, 0), (2, 0)))[:, :-2]
    skip = (ext > 0) & (ext != before)
    states = dict(ext=ext, valid=valid, skip=skip)
    if table is not None:
        states["emit"] = jnp.exp(jnp.take(table, ext, axis=2))
    return states


def initial_alpha(states: dict) -> jax.Array:
    """[B, 2S+1] the forward variables before any frame: all mass on a virtual start at state 0."""
    return jnp.where(jnp.arange(states["ext"].shape[1])[None] == 0, 0.0, NEG) * jnp.ones(states["ext"].shape)


def _advance(p: jax.Array, emit: jax.Array, states: dict) -> jax.Array:
    """One CTC frame in probabilities: p [..., B, 2S+1] (scaled) and that frame's emission probabilities of
    each state [..., B, 2S+1]. (Probabilities, not logs: a step scores every code, and sums and products
    cost a fraction of log-sum-exps; the caller rescales by each row's largest value before, so two frames
    cannot underflow what matters.)"""
    step = jnp.pad(p, [(0, 0)] * (p.ndim - 1) + [(1, 0)])[..., :-1]
    jump = jnp.where(states["skip"], jnp.pad(p, [(0, 0)] * (p.ndim - 1) + [(2, 0)])[..., :-2], 0.0)
    return jnp.where(states["valid"], (p + step + jump) * emit, 0.0)


def candidates(alpha: jax.Array, table: jax.Array, states: dict,
               progress=0.0) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """alpha [B, 2S+1], table [K, r, V] -> (each code's score relative to the best [B, K] (<= 0), the forward
    variables after each code as scaled probabilities [K, B, 2S+1] and their log scale [B, 1]: `select` takes
    the log of the drawn code's only). A code's score is the prefix log-likelihood after it plus
    `progress` (nats a text unit) times the units said, expected under the forward variables: a pause is
    always consistent with the text and a spoken unit never certain, so the likelihood alone prefers pauses.
    (The expectation, not a bonus inside the sum: there a code unsure of its unit would gain from the faint
    paths through the units after it.)"""
    emit = states["emit"] if "emit" in states else jnp.exp(jnp.take(table, states["ext"], axis=2))  # [K, r, B, 2S+1]
    top = jnp.max(alpha, axis=-1, keepdims=True)
    p = jnp.broadcast_to(jnp.exp(alpha - top), (table.shape[0],) + alpha.shape)
    for j in range(table.shape[1]):
        p = _advance(p, emit[:, j], states)
    total = jnp.sum(p, axis=-1)  # [K, B]
    said = (jnp.arange(p.shape[-1]) + 1) // 2  # units said by state s
    expected = jnp.sum(p * said, axis=-1) / jnp.maximum(total, 1e-30)
    score = (jnp.where(total > 0, jnp.log(jnp.maximum(total, 1e-30)), NEG) + progress * expected).T  # [B, K]
    return score - jnp.max(score, axis=-1, keepdims=True), (p, top)


def guide(logits: jax.Array, alpha: jax.Array, table: jax.Array, states: dict, weight,
          progress=0.0) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The AR's logits [B, V] (codes first, then SOS and EOS) with `weight` × each code's relative score
    added; and the forward variables after each code (as `candidates` gives them), for `select` once a token
    is drawn."""
    score, after = candidates(alpha, table, states, progress)
    k = table.shape[0]
    return logits.at[:, :k].add(weight * score), after


def select(after: tuple[jax.Array, jax.Array], alpha: jax.Array, token: jax.Array, codebook_size: int) -> jax.Array:
    """The forward variables [B, 2S+1] after the drawn tokens [B]; rows that drew EOS (or SOS) keep theirs."""
    p, top = after
    picked = jnp.take_along_axis(p, jnp.clip(token, 0, codebook_size - 1)[None, :, None], axis=0)[0]
    picked = jnp.where(picked > 0, jnp.log(jnp.where(picked > 0, picked, 1.0)), NEG) + top
    return jnp.where((token < codebook_size)[:, None], picked, alpha)
