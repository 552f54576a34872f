"""Guided attention's loss: attention along the diagonal costs nothing, against it nearly everything."""
import jax.numpy as jnp
import numpy as np
import pytest

from speech_jax.train.guided_attention import diagonal_penalty, guided_attention_loss


def _queries_keys(text_of_slot, n_text, scale=30.0):
    """One head whose audio slot t attends (almost only) to text unit text_of_slot[t]: one-hot keys."""
    k = np.eye(n_text, dtype=np.float32)[None, :, None, :] * scale        # [1, N, 1, D=N]
    q = np.eye(n_text, dtype=np.float32)[np.asarray(text_of_slot)][None, :, None, :] * scale
    return jnp.asarray(q), jnp.asarray(k)


def test_diagonal_attention_costs_nothing_and_reversed_attention_nearly_everything():
    t, n = 24, 8
    valid, text_len = jnp.ones((1, t), bool), jnp.asarray([n])
    along = np.arange(t) * n // t
    loss = lambda order: float(guided_attention_loss(*_queries_keys(order, n), valid, text_len, 1, 0.4))  # noqa: E731
    uniform = jnp.zeros((1, t, 1, n)), jnp.zeros((1, n, 1, n))
    assert loss(along) < 0.02
    assert loss(n - 1 - along) > 0.45  # reversed still crosses the diagonal mid-utterance
    assert loss(along) < float(guided_attention_loss(*uniform, valid, text_len, 1, 0.4)) < loss(n - 1 - along)


def test_padding_neither_counts_nor_is_attended():
    t, n = 12, 6
    along = np.arange(t) * n // t
    want = guided_attention_loss(*_queries_keys(along, n), jnp.ones((1, t), bool), jnp.asarray([n]), 1, 0.4)
    # 3 padded text keys, and 5 padded audio slots; every query also points at the last padded key.
    q, k = _queries_keys(np.concatenate([along, np.full(5, n + 2)]), n + 3)
    q = q.at[..., n + 2].set(30.0)
    got = guided_attention_loss(q, k, jnp.arange(t + 5)[None] < t, jnp.asarray([n]), 1, 0.4)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The padded audio slots before the valid ones (a packed layout's loss slots end its row).
    before = guided_attention_loss(jnp.roll(q, 5, axis=1), k, jnp.arange(t + 5)[None] >= 5, jnp.asarray([n]), 1, 0.4)
    np.testing.assert_allclose(before, want, rtol=1e-5)


def test_penalty_is_zero_on_the_diagonal_and_grows_off_it():
    w = np.asarray(diagonal_penalty(jnp.asarray([10]), jnp.asarray([10]), 10, 10, 0.4))[0]
    np.testing.assert_allclose(np.diag(w), 0.0, atol=1e-6)
    assert np.all(np.diff(w[0]) > 0) and w[0, -1] > 0.9 * (1 - np.exp(-0.81 / 0.32))


def test_heads_must_exist():
    q, k = _queries_keys(np.arange(4), 4)
    with pytest.raises(ValueError, match="heads"):
        guided_attention_loss(q, k, jnp.ones((1, 4), bool), jnp.asarray([4]), 2, 0.4)
