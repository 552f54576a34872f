"""Fused attention with structural masks: Pallas splash attention (interpret mode on this CPU host) equals
the einsum reference in values and gradients on every valid query row, and a TPU compile runs the kernel.
cuDNN (GPU) needs a GPU: not exercised here."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from speech_jax import sharding
from speech_jax.layers.attention import attention_mask, dot_product_attention, resolve_impl


def _inputs(t=140, b=2, h=2, kh=1, d=16):
    r = np.random.default_rng(0)
    q, k, v = (jnp.asarray(r.normal(size=s), jnp.float32) for s in ((b, t, h, d), (b, t, kh, d), (b, t, kh, d)))
    valid = jnp.arange(t)[None] < jnp.array([t, 70])[:, None]  # the second example is half padding
    return q, k, v, valid


@pytest.mark.parametrize("causal", [False, True], ids=["keys", "causal"])
def test_splash_equals_the_reference_on_valid_rows(causal):
    q, k, v, valid = _inputs()
    mask = attention_mask(valid, q.shape[1], q.shape[1], causal=causal)
    rows = valid[:, :, None, None]

    def loss(impl, q, k, v):
        o = dot_product_attention(q, k, v, mask, impl, causal=causal, key_valid=valid)
        return jnp.sum(jnp.where(rows, o, 0.0) ** 2), o

    def run(impl):  # jitted: interpret mode run eagerly is op by op
        grad = jax.value_and_grad(lambda *a: loss(impl, *a), argnums=(0, 1, 2), has_aux=True)
        return jax.jit(grad)(q, k, v)

    (_, want), g_want = run("einsum")
    (_, got), g_got = run("splash")
    np.testing.assert_allclose(np.where(rows, got, 0), np.where(rows, want, 0), atol=1e-5)
    for a, b in zip(g_got, g_want):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_auto_follows_the_mesh_platform_not_the_host():
    assert resolve_impl("auto") == "blocked"  # the tests' host: CPU
    mesh = sharding.make_mesh(_mesh_cfg(), jax.devices()[:1])
    with sharding.activation_rules(mesh, sharding.DEFAULT_RULES):
        assert resolve_impl("auto") == "blocked"


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="TPU topologies need libtpu (extra 'tpu')")
def test_a_tpu_compile_runs_the_splash_kernel_per_batch_shard():
    from jax.experimental import topologies
    from jax.sharding import NamedSharding, PartitionSpec as P
    devices = topologies.get_topology_desc(platform="tpu", topology_name="v5e:2x2").devices
    mesh = sharding.make_mesh(_mesh_cfg(fsdp=4), devices)
    b, t, h, kh, d = 8, 200, 4, 2, 64
    spec = NamedSharding(mesh, P("fsdp"))
    args = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=spec) for s in ((b, t, h, d), (b, t, kh, d), (b, t, kh, d))]
    args.append(jax.ShapeDtypeStruct((b, t), bool, sharding=spec))

    def loss(q, k, v, valid):
        mask = attention_mask(valid, t, t, causal=True)
        return jnp.sum(dot_product_attention(q, k, v, mask, "auto", causal=True, key_valid=valid) ** 2)

    with sharding.activation_rules(mesh, sharding.DEFAULT_RULES):
        assert resolve_impl("auto") == "splash"
        text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*args).compile().as_text()
    # Forward, dq and dkv kernels; no [B, T, T]-sized mask enters them.
    assert text.count("tpu_custom_call") >= 3 and "splash" in text


def _mesh_cfg(fsdp=1):
    import ml_collections
    return ml_collections.ConfigDict(dict(data=1, fsdp=fsdp, tensor=1, num_devices=0))
