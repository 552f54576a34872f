"""CTC guidance: the forward variables advanced a token at a time are optax's CTC over the whole sequence;
a code that says the next text unit scores above one that says another; guided decoding says the text."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from speech_jax.infer import ctc_guidance as g

K, R, V = 6, 2, 5


def _table(seed=0):
    return jax.nn.log_softmax(2.0 * jax.random.normal(jax.random.key(seed), (K, R, V)), axis=-1)


def test_advancing_token_by_token_is_optax_ctc_over_the_sequence():
    table = _table()
    labels = jnp.asarray([[1, 2, 2, 0], [3, 4, 1, 1]])
    label_len = jnp.asarray([3, 4])
    tokens = np.random.RandomState(0).randint(0, K, (2, 7))
    states = g.extended_labels(labels, label_len)
    alpha = g.initial_alpha(states)
    for t in range(tokens.shape[1]):
        _, after = g.candidates(alpha, table, states)
        alpha = g.select(after, alpha, jnp.asarray(tokens[:, t]), K)
    end = 2 * label_len
    whole = jnp.logaddexp(jnp.take_along_axis(alpha, end[:, None], 1), jnp.take_along_axis(alpha, end[:, None] - 1, 1))
    logits = table[tokens].reshape(2, tokens.shape[1] * R, V)
    pad = (jnp.arange(4)[None] >= label_len[:, None]).astype(jnp.float32)
    expected = -optax.ctc_loss(logits, jnp.zeros(logits.shape[:2]), labels, pad, blank_id=0)
    np.testing.assert_allclose(whole[:, 0], expected, rtol=1e-5)
    # EOS (id K + 1) leaves a row's variables as they were.
    np.testing.assert_array_equal(g.select(after, alpha, jnp.asarray([K + 1, 0]), K)[0], alpha[0])


def test_the_code_that_says_the_next_unit_scores_best_and_guidance_adds_only_to_codes():
    # Code k reads unit k (k < V) on both frames, near certainly; codes 5 reads blank.
    table = jnp.log(jnp.full((K, R, V), 1e-4).at[jnp.arange(K), :, jnp.minimum(jnp.arange(K), V - 1) % V].set(1.0))
    table = table.at[5].set(jnp.log(jnp.full((R, V), 1e-4).at[:, 0].set(1.0)))
    states = g.extended_labels(jnp.asarray([[3, 1, 0]]), jnp.asarray([2]))
    score, _ = g.candidates(g.initial_alpha(states), table, states)
    score = np.asarray(score[0])
    assert score.max() == 0.0 and score[3] > -0.1 and score[5] > -0.1  # the first unit, or a pause
    assert score[1] < -9 and score[2] < -9 and score[4] < -9            # the second unit first, or others
    logits = jnp.zeros((1, K + 2))
    guided, _ = g.guide(logits, g.initial_alpha(states), table, states, 0.5)
    np.testing.assert_allclose(guided[0, :K], 0.5 * score, rtol=1e-6)
    np.testing.assert_array_equal(guided[0, K:], logits[0, K:])


def test_progress_lets_a_spoken_unit_outscore_a_pause():
    """A code that says the first unit at 0.6 scores below a near-certain pause; a progress bonus of a
    unit's cost turns that round, and a wrong unit stays far below both."""
    probs = jnp.full((3, R, V), 0.1)
    probs = probs.at[0, :, :].set(0.01).at[0, :, 0].set(0.96)                      # a pause
    probs = probs.at[1, :, 3].set(0.6).at[2, :, 2].set(0.6)                        # unit 3, unit 2
    table = jnp.log(probs / probs.sum(-1, keepdims=True))
    states = g.extended_labels(jnp.asarray([[3, 1]]), jnp.asarray([2]))
    alpha = g.initial_alpha(states)
    plain, _ = g.candidates(alpha, table, states)
    bonus, _ = g.candidates(alpha, table, states, progress=2.0)
    assert plain[0, 0] == 0.0 and plain[0, 1] < -0.3
    assert bonus[0, 1] == 0.0 and bonus[0, 0] < -0.5
    assert max(plain[0, 2], bonus[0, 2]) < -1.5
