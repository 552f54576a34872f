"""Layers: masking, grouped-query attention (einsum, xla and blocked implementations), RoPE, SwiGLU's
hand-written backward, convolution shapes, logical axis names."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from speech_jax.layers import (Attention, Conv1d, ConvTranspose1d, RMSNorm, SwiGLU, Transformer,
                               apply_rope, attention_mask, dot_product_attention)
from speech_jax.layers import attention as attention_lib
from speech_jax.layers.mlp import swiglu

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


# --- "blocked" attention and the hand-written backward passes (the CPU fast path) ------------------

def _causal_padded_mask(lengths):
    """Causal over valid keys; padding queries see every earlier slot (no empty rows), as in the AR model."""
    valid = jnp.arange(T)[None] < jnp.asarray(lengths)[:, None]
    causal = attention_mask(None, T, T, causal=True)
    return attention_mask(valid, T, T, causal=True) | (causal & ~valid[:, :, None])


@pytest.mark.parametrize("case", ["causal", "padded", "cache", "unmasked"])
def test_blocked_attention_equals_einsum_in_values_and_gradients(case, monkeypatch):
    monkeypatch.setattr(attention_lib, "CAUSAL_BLOCK", 5)  # T = 12: three blocks of 4 queries
    t = 1 if case == "cache" else T  # cache: one decode query against 12 cache slots
    q, k, v, w = _x(0, (B, t, 8, 16)), _x(1, (B, T, 2, 16)), _x(2, (B, T, 2, 16)), _x(3, (B, t, 8, 16))
    if case == "causal":
        mask = _causal_padded_mask([T, 7])
    elif case == "unmasked":
        mask = None
    else:
        mask = attention_mask(jnp.arange(T)[None] < jnp.array([[T], [5]]), t, T)
    causal = case == "causal"

    def loss(impl):
        return lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, mask, impl, causal=causal) * w)

    want = dot_product_attention(q, k, v, mask, "einsum")
    got = dot_product_attention(q, k, v, mask, "blocked", causal=causal)
    np.testing.assert_allclose(got, want, atol=1e-5)
    grads = [jax.jit(jax.grad(loss(impl), argnums=(0, 1, 2)))(q, k, v) for impl in ("einsum", "blocked")]
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, atol=1e-4)


def test_causal_blocks_tile_the_queries_and_stop_at_the_diagonal(monkeypatch):
    monkeypatch.setattr(attention_lib, "CAUSAL_BLOCK", 5)
    blocks = attention_lib._query_blocks(T, T, causal=True)
    assert len(blocks) == 3 and blocks[0][0] == 0 and blocks[-1][1] == T
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all(s1 == q1 for _, q1, s1 in blocks)  # keys after a block's last query are skipped
    assert attention_lib._query_blocks(T, T, causal=False) == ((0, T, T),)
    assert attention_lib._query_blocks(4, T, causal=True) == ((0, 4, T),)  # not self-attention: no skip


def test_auto_picks_blocked_on_cpu_and_unknown_impl_fails():
    assert attention_lib.resolve_impl("auto") == "blocked"
    assert attention_lib.resolve_impl("xla") == "xla"
    with pytest.raises(ValueError, match="unknown attention impl"):
        Attention(D, 4, 2, impl="flash", rngs=nnx.Rngs(0))


def test_blocked_causal_transformer_matches_einsum_with_scan_and_remat(monkeypatch):
    monkeypatch.setattr(attention_lib, "CAUSAL_BLOCK", 5)
    mask = _causal_padded_mask([T, 9])
    x = _x()

    def run(impl, remat):
        stack = Transformer(1, D, 4, 2, 64, impl=impl, scan_layers=True, remat=remat, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(stack)
        f = lambda p, x: jnp.sum(nnx.merge(graphdef, p)(x, mask=mask, causal=True) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(params, x)

    (l0, (gp0, gx0)), (l1, (gp1, gx1)) = run("einsum", "none"), run("blocked", "full")
    np.testing.assert_allclose(l1, l0, rtol=1e-5)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5), gp0, gp1)


def test_swiglu_hand_written_backward_matches_autodiff():
    mlp = SwiGLU(D, 64, rngs=nnx.Rngs(0))
    ws = [mlp.gate.kernel[...], mlp.up.kernel[...], mlp.down.kernel[...]]
    x, w = _x(), _x(1)

    def plain(x, a, b, c):
        return (jax.nn.silu(x @ a) * (x @ b)) @ c

    np.testing.assert_allclose(mlp(x), plain(x, *ws), atol=1e-5)
    want = jax.grad(lambda *a: jnp.sum(plain(*a) * w), argnums=(0, 1, 2, 3))(x, *ws)
    got = jax.grad(lambda *a: jnp.sum(swiglu(*a) * w), argnums=(0, 1, 2, 3))(x, *ws)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_init_rngs_draws_flax_s_keys_without_walking_the_trace(monkeypatch):
    # The same parameters as nnx.Rngs, under jit and under a scan over layers (split_rngs); flax's own stream
    # builds a tracer error message (which walks the trace so far) for every key it draws under a trace.
    from jax._src.interpreters import partial_eval
    from speech_jax.layers import init_rngs
    messages = []
    original = partial_eval.DynamicJaxprTracer._origin_msg
    monkeypatch.setattr(partial_eval.DynamicJaxprTracer, "_origin_msg",
                        lambda self: messages.append(1) or original(self))

    def build(make_rngs):
        def params(key):
            model = Transformer(2, d_model=D, num_heads=4, num_kv_heads=2, mlp_dim=64, scan_layers=True,
                                rngs=make_rngs(key))
            return nnx.state(model, nnx.Param)
        return jax.jit(params)(jax.random.key(3))

    ours = build(init_rngs)
    assert not messages
    theirs = build(nnx.Rngs)
    assert messages  # flax's stream still does: when it stops, init_rngs can go
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(a, b)
