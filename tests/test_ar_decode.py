"""KV-cache decoding equals full recomputation; sampling filters, repetition fallback and length rules."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from speech_jax.infer.ar_decode import STATIC_ARGNAMES, generate, greedy_decode_uncached
from speech_jax.infer.sampling import apply_length_rules, filter_logits, length_bounds, sample_token
from speech_jax.models.ar_layout import build_layout, build_prefix
from speech_jax.audio.mel import MelSpec
from speech_jax.models.ar_transformer import ARTransformer

K = 16
EOS = K + 1
SPEC = MelSpec(sample_rate=16000, n_fft=256, hop_length=160, win_length=256, n_mels=16)
B, LA = 2, 4
S0 = 1 + 2 + 4 + 1 + 3  # spk, prompt text 2, text 4, SOS + prompt tokens 3

# Row 0 zero-shot, row 1 one-shot (prompt text and prompt tokens in context).
INPUTS = dict(text=[[5, 6, 7, 0], [5, 9, 0, 0]], text_len=[3, 1],
              ptext=[[0, 0], [8, 4]], ptext_len=[0, 2],
              ptok=[[0, 0, 0], [3, 4, 0]], ptok_len=[0, 2])
TARGETS = np.array([[1, 2, 3, 4], [9, 8, 7, 6]], np.int32)



def tiny_cfg(**kw):
    c = dict(d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=64, rope_theta=10000.0,
             attention_impl="einsum", dtype="float32", text_vocab_size=32, codebook_size=K,
             speaker="learnable", scan_layers=False, remat="none",
             spk_d_model=16, spk_layers=1, spk_heads=2, spk_mlp_dim=32, spk_dim=16)
    c.update(kw)
    return ml_collections.ConfigDict(c)


jit_generate = jax.jit(generate, static_argnums=0, static_argnames=STATIC_ARGNAMES)


def _prefix():
    a = {k: np.asarray(v, np.int32) for k, v in INPUTS.items()}
    return build_prefix(a["text"], a["text_len"], a["ptext"], a["ptext_len"], a["ptok"], a["ptok_len"],
                        codebook_size=K)


def _layout():
    a = {k: np.asarray(v, np.int32) for k, v in INPUTS.items()}
    return build_layout(a["text"], a["text_len"], TARGETS, np.full((B,), LA, np.int32), a["ptext"],
                        a["ptext_len"], a["ptok"], a["ptok_len"], codebook_size=K)


@functools.lru_cache(maxsize=None)
def _setup(scan_layers: bool):
    """(model, spk, prefix), built once per layer layout for the whole module."""
    model = ARTransformer(tiny_cfg(scan_layers=scan_layers), SPEC, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    spk = jnp.asarray(np.random.RandomState(0).randn(B, 32).astype(np.float32))
    return model, spk, _prefix()


both_layouts = pytest.mark.parametrize("scan_layers", [False, True], ids=["layers", "scan_layers"])


@both_layouts
def test_cached_logits_match_full_recomputation(scan_layers):
    model, spk, prefix = _setup(scan_layers)
    layout = _layout()
    targets = layout["audio_ids"][:, S0:]  # target tokens then EOS
    graphdef, state = nnx.split(model)

    @jax.jit
    def teacher_forced(state, prefix, spk, targets):
        m = nnx.merge(graphdef, state)
        logits, cache = m.prefill(prefix, spk, m.init_cache(B, S0 + LA + 1))
        first = jnp.sum(prefix["valid"], axis=1)

        def step(cache, i):
            lg, cache = m.decode_step(targets[:, i], first + i, S0 + i, cache)
            return cache, lg

        _, rest = jax.lax.scan(step, cache, jnp.arange(LA))
        return jnp.concatenate([logits[:, None], jnp.swapaxes(rest, 0, 1)], axis=1)

    full = jax.jit(lambda st, lay, spk: nnx.merge(graphdef, st)(lay, spk))(state, layout, spk)
    cached = teacher_forced(state, prefix, spk, targets)
    np.testing.assert_allclose(cached, full[:, S0 - 1:S0 + LA], atol=1e-4)


@both_layouts
def test_cached_greedy_decode_equals_uncached(scan_layers):
    model, spk, prefix = _setup(scan_layers)
    n = 6
    want, _ = greedy_decode_uncached(model, prefix, spk, n - 1)
    graphdef, state = nnx.split(model)
    # min_ratio large: EOS banned until the last slot, so both produce n - 1 audio tokens.
    tokens, lengths = jit_generate(graphdef, state, prefix, spk, jax.random.key(0), max_new_tokens=n,
                                   greedy=True, min_ratio=100.0, max_ratio=100.0)
    np.testing.assert_array_equal(tokens[:, :n - 1], want)
    np.testing.assert_array_equal(tokens[:, n - 1], -1)
    np.testing.assert_array_equal(lengths, n - 1)


def test_sampled_generation_obeys_length_rules():
    model, spk, prefix = _setup(False)
    graphdef, state = nnx.split(model)
    min_len, max_len = np.array([3, 1]), np.array([6, 2])  # text lengths 3 and 1, ratios 1 and 2
    runs = []
    for seed in range(4):
        tokens, lengths = jit_generate(graphdef, state, prefix, spk, jax.random.key(seed), max_new_tokens=8,
                                       temperature=2.0, top_k=0, top_p=1.0, min_ratio=1.0, max_ratio=2.0)
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        assert np.all(lengths >= min_len) and np.all(lengths <= max_len - 1), lengths
        for row in range(B):
            assert np.all((tokens[row, :lengths[row]] >= 0) & (tokens[row, :lengths[row]] < K))
            assert np.all(tokens[row, lengths[row]:] == -1)
        runs.append(tokens)
    again, _ = jit_generate(graphdef, state, prefix, spk, jax.random.key(0), max_new_tokens=8,
                            temperature=2.0, top_k=0, top_p=1.0, min_ratio=1.0, max_ratio=2.0)
    np.testing.assert_array_equal(again, runs[0])  # seeded
    assert any(not np.array_equal(runs[0], r) for r in runs[1:])


def test_ctc_guidance_makes_an_untrained_ar_say_the_text():
    """An untrained AR says nothing; under strong CTC guidance (a tokenizer head that reads code k as unit
    k // 2 + 1, odd codes weakly, code 0 as a pause) its tokens read as each row's labels, while unguided
    tokens from the same key do not."""
    from speech_jax.eval.cer import ctc_collapse
    model, spk, prefix = _setup(False)
    graphdef, state = nnx.split(model)
    v = K // 2 + 1
    units = np.arange(K) // 2 + 1
    probs = np.full((K, 2, v), 0.02)
    probs[np.arange(K), :, units] = np.where(np.arange(K) % 2, 0.3, 0.9)[:, None]
    probs[0] = 0.02
    probs[0, :, 0] = 0.9
    table = jnp.log(jnp.asarray(probs / probs.sum(-1, keepdims=True), jnp.float32))
    labels = np.array([[4, 2, 7, 0], [3, 3, 0, 0]], np.int32)  # a repeated unit needs a pause between
    label_len = np.array([3, 2], np.int32)
    guidance = dict(table=table, labels=jnp.asarray(labels), label_len=jnp.asarray(label_len),
                    weight=jnp.float32(20.0), progress=jnp.float32(3.0))
    run = functools.partial(jit_generate, graphdef, state, prefix, spk, jax.random.key(0), max_new_tokens=12,
                            temperature=1.0, top_k=0, top_p=1.0, min_ratio=3.0, max_ratio=4.0)
    read = lambda t, n: ctc_collapse([int(u) for f in np.asarray(table)[t[:n]].argmax(-1) for u in f])  # noqa: E731
    for (tokens, lengths), said in ((run(guidance=guidance), True), (run(), False)):
        tokens, lengths = np.asarray(tokens), np.asarray(lengths)
        rows = [read(tokens[r], lengths[r]) == list(labels[r, :label_len[r]]) for r in range(B)]
        assert all(rows) if said else not all(rows), (tokens, lengths)


# --- sampling (no model) -------------------------------------------------------------------------

def _draws(logits, n=400, **kw):
    keys = jax.random.split(jax.random.key(7), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: sample_token(logits, k, **kw)))(keys))


def test_length_rules_ban_and_force_eos():
    logits = jnp.zeros((3, K + 2)).at[:, EOS].set(5.0)
    out = apply_length_rules(logits, 2, jnp.array([3, 2, 0]), jnp.array([10, 10, 3]), EOS)
    assert out[0, EOS] == -jnp.inf and np.all(np.isfinite(out[0, :K]))   # step 2 < min_len 3
    np.testing.assert_array_equal(out[1], logits[1])                      # nothing to enforce
    assert out[2, EOS] == 5.0 and np.all(out[2, :K] == -jnp.inf)          # step 2 >= max_len - 1
    draws = _draws(out)
    assert not np.any(draws[:, 0] == EOS) and np.all(draws[:, 2] == EOS)


def test_length_bounds_are_proportional_and_capped():
    min_len, max_len = length_bounds(jnp.array([0, 3, 100]), 2.0, 20.0, max_tokens=50)
    np.testing.assert_array_equal(max_len, [1, 50, 50])
    np.testing.assert_array_equal(min_len, [0, 6, 49])


def test_top_k_and_top_p_leave_only_allowed_tokens():
    logits = jnp.log(jnp.array([[0.05, 0.5, 0.1, 0.2, 0.15]]))
    kept = lambda f: set(np.flatnonzero(np.isfinite(np.asarray(f)[0])))
    assert kept(filter_logits(logits, top_k=2)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.8)) == {1, 3, 4}      # 0.5 + 0.2 < 0.8 <= + 0.15
    assert kept(filter_logits(logits, top_k=4, top_p=0.6)) == {1, 3}  # renormalised top 4: 0.53 + 0.21
    draws = _draws(logits, top_k=4, top_p=0.6)
    assert set(np.unique(draws)) == {1, 3}
    draws = _draws(logits, top_p=0.8)
    assert set(np.unique(draws)) == {1, 3, 4}
    assert np.all(sample_token(logits, jax.random.key(0), greedy=True) == 1)


def test_repetition_aware_sampling_falls_back_to_the_full_distribution():
    logits = jnp.zeros((1, 8)).at[0, 0].set(2.0)  # full distribution: p(0) = e^2 / (e^2 + 7) ~ 0.51
    kw = dict(top_k=1, rep_window=4)             # the filtered distribution is token 0 only
    fresh = jnp.array([[5, -1, 3, 2]])
    once = jnp.array([[5, 0, 3, 2]])
    assert np.all(_draws(logits, history=fresh, rep_threshold=0.25, **kw) == 0)
    fallback = _draws(logits, history=once, rep_threshold=0.25, **kw)  # 1 of 4 >= 0.25 · 4: redraw
    assert 0.35 < np.mean(fallback == 0) < 0.7 and len(np.unique(fallback)) > 4
    # The threshold is a share of the window: one repeat is not enough at 0.5 (needs 2 of 4).
    assert np.all(_draws(logits, history=once, rep_threshold=0.5, **kw) == 0)
    # Only the last rep_window tokens count.
    older = jnp.array([[0, 5, 3, 2, 1]])
    assert np.all(_draws(logits, history=older, rep_threshold=0.25, **kw) == 0)
