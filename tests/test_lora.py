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
