import jax.numpy as jnp
import pytest
from flax import nnx

from speech_jax.layers.lora import LoRA


def test_fresh_adapter_is_zero_and_shaped_like_the_weight():
    lora = LoRA((8,), (2, 4), rank=2, alpha=4.0, names_in="embed", names_out=None, rngs=nnx.Rngs(0))
    assert lora.delta().shape == (8, 2, 4)
    assert jnp.all(lora.delta() == 0)
    lora.b[...] = jnp.ones_like(lora.b[...])
    assert jnp.allclose(lora.delta().reshape(8, 8), 2.0 * lora.a[...] @ lora.b[...])


def test_rank_zero_is_an_error():
    with pytest.raises(ValueError, match="rank"):
        LoRA((8,), (8,), rank=0, alpha=1.0, names_in=None, names_out=None, rngs=nnx.Rngs(0))


def test_attention_rank_zero_is_the_old_layer_and_fresh_adapter_changes_nothing():
    from speech_jax.layers.attention import Attention
    x = jnp.ones((1, 5, 16)) * jnp.arange(16) / 16
    base = Attention(16, 2, rngs=nnx.Rngs(0))
    adapted = Attention(16, 2, lora_rank=2, lora_alpha=4.0, rngs=nnx.Rngs(0))
    assert not any("lora" in str(p) for p, _ in nnx.to_flat_state(nnx.state(base)))
    assert jnp.array_equal(base(x), Attention(16, 2, rngs=nnx.Rngs(0))(x))
    for n in "qkvo":
        getattr(adapted, f"w{n}")[...] = getattr(base, f"w{n}")[...]
    assert jnp.array_equal(base(x), adapted(x))
    adapted.lora_q.b[...] = jnp.ones_like(adapted.lora_q.b[...])
    assert not jnp.allclose(base(x), adapted(x))
