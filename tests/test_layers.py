"""Layers: masking, grouped-query attention, RoPE, convolution shapes, logical axis names."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from speech_jax.layers import (Attention, Conv1d, ConvTranspose1d, RMSNorm, SwiGLU, Transformer,
                               apply_rope, attention_mask, dot_product_attention)

B, T, D = 2, 12, 32


def _x(seed=0, shape=(B, T, D)):
    return jax.random.normal(jax.random.key(seed), shape)


def assert_logical_names(module):
    """Every Param carries one logical name per dimension in its sharding metadata."""
    params = nnx.state(module, nnx.Param)
    leaves = jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable))
    assert leaves
    for var in leaves:
        names = var.get_metadata().get("out_sharding")
        assert names is not None, var
        assert len(names) == var.get_value().ndim, (names, var.get_value().shape)
        assert var.get_value().dtype == jnp.float32


def test_causal_mask_ignores_future():
    attn = Attention(D, 4, 2, rngs=nnx.Rngs(0))
    mask = attention_mask(None, T, T, causal=True)
    x = _x()
    y = attn(x, mask)
    x2 = x.at[:, 7:].set(_x(1)[:, 7:])
    y2 = attn(x2, mask)
    np.testing.assert_allclose(y[:, :7], y2[:, :7], atol=1e-5)
    assert not np.allclose(y[:, 7:], y2[:, 7:])


def test_padding_mask_ignores_padded_keys():
    stack = Transformer(2, D, 4, 2, 64, rngs=nnx.Rngs(0))
    lengths = jnp.array([T, 7])
    key_mask = jnp.arange(T)[None] < lengths[:, None]
    x = _x()
    x2 = jnp.where(key_mask[..., None], x, 100.0 * _x(2))
    y, y2 = stack(x, key_mask), stack(x2, key_mask)
    np.testing.assert_allclose(y[0], y2[0], atol=1e-5)
    np.testing.assert_allclose(y[1, :7], y2[1, :7], atol=1e-4)


def test_gqa_with_all_kv_heads_is_multi_head_attention():
    h, hd = 4, 8
    attn = Attention(D, h, h, rngs=nnx.Rngs(0))
    x, pos = _x(), jnp.arange(T)
    mask = attention_mask(jnp.arange(T)[None].repeat(B, 0) < 9, T, T)
    y = attn(x, mask)
    # Plain multi-head attention, one head at a time.
    q, k, v = attn.project_qkv(x, pos)
    heads = []
    for i in range(h):
        s = q[:, :, i] @ jnp.swapaxes(k[:, :, i], 1, 2) / np.sqrt(hd)
        s = jnp.where(mask, s, -jnp.inf)
        heads.append(jax.nn.softmax(s, -1) @ v[:, :, i])
    ref = attn.project_out(jnp.stack(heads, 2))
    np.testing.assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_einsum_matches_xla_attention_with_groups(causal):
    q = _x(0, (B, T, 8, 16))
    k, v = _x(1, (B, T, 2, 16)), _x(2, (B, T, 2, 16))
    mask = attention_mask(jnp.arange(T)[None].repeat(B, 0) < jnp.array([[T], [5]]), T, T, causal=causal)
    a = dot_product_attention(q, k, v, mask, "einsum")
    b = dot_product_attention(q, k, v, mask, "xla")
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_rope_scores_depend_on_relative_position():
    q, k = _x(0, (1, 1, 1, 16)), _x(1, (1, 1, 1, 16))
    def score(m, n):
        return jnp.sum(apply_rope(q, jnp.array([m]), 100.0) * apply_rope(k, jnp.array([n]), 100.0))
    np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-4)
    np.testing.assert_allclose(score(5, 5), jnp.sum(q * k), rtol=1e-4)
    assert not np.isclose(score(3, 1), score(1, 3))


def test_conv_shapes_and_causality():
    x = _x()
    assert Conv1d(D, 16, 3, rngs=nnx.Rngs(0))(x).shape == (B, T, 16)
    assert Conv1d(D, 16, 4, stride=2, rngs=nnx.Rngs(0))(x).shape == (B, T // 2, 16)
    assert ConvTranspose1d(D, 16, 4, stride=2, rngs=nnx.Rngs(0))(x).shape == (B, 2 * T, 16)
    causal = Conv1d(D, 16, 3, padding="causal", rngs=nnx.Rngs(0))
    y, y2 = causal(x), causal(x.at[:, 6:].set(0.0))
    np.testing.assert_allclose(y[:, :6], y2[:, :6], atol=1e-6)


def test_transposed_conv_is_adjoint_of_strided_conv():
    # <down(x), y> == <x, up(y)> when both share one kernel and have no bias.
    down = Conv1d(D, 16, 4, stride=2, use_bias=False, rngs=nnx.Rngs(0))
    up = ConvTranspose1d(16, D, 4, stride=2, use_bias=False, rngs=nnx.Rngs(1))
    up.kernel[...] = jnp.swapaxes(down.kernel[...], 1, 2)
    x, y = _x(0), _x(1, (B, T // 2, 16))
    np.testing.assert_allclose(jnp.sum(down(x) * y), jnp.sum(x * up(y)), rtol=1e-4)


def test_norm_and_mlp_dtypes():
    x = _x().astype(jnp.bfloat16)
    assert RMSNorm(D, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16
    assert SwiGLU(D, 64, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))(x).dtype == jnp.bfloat16


def test_every_param_has_logical_names():
    for m in (Transformer(1, D, 4, 2, 64, rngs=nnx.Rngs(0)), Conv1d(D, 8, 3, rngs=nnx.Rngs(0)),
              ConvTranspose1d(D, 8, 4, stride=2, rngs=nnx.Rngs(0))):
        assert_logical_names(m)
