"""optim.decay_mask: with "matrices", AdamW decays kernels only; either setting has the same optimizer state."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.common import base_config
from speech_jax.layers.conv import Conv1d
from speech_jax.layers.norms import RMSNorm
from speech_jax.layers.params import param
from speech_jax.layers.snake import Snake
from speech_jax.models.vq import VectorQuantizer
from speech_jax.train.optim import make_optimizer
from speech_jax.train.tasks.flow_vae import DISC, GEN, GanOptimizers

LR, WD = 0.1, 0.5
DECAYED = {"conv/kernel", "vq/proj_in/kernel", "vq/proj_out/kernel"}
KEPT = {"norm/scale", "conv/bias", "snake/log_alpha", "text_embed", "vq/codebook"}


class Layers(nnx.Module):
    """One of each kind of parameter the models hold, from the project's own layers."""

    def __init__(self, rngs: nnx.Rngs):
        self.norm = RMSNorm(4, rngs=rngs)
        self.conv = Conv1d(4, 4, 3, rngs=rngs)
        self.snake = Snake(4, rngs=rngs)
        self.text_embed = param(rngs, nnx.initializers.normal(1.0), (10, 4), ("vocab", "embed"))
        self.vq = VectorQuantizer(4, 8, 2, update="loss", rngs=rngs)  # the codebook is a Param


def optim_config(decay_mask: str) -> ml_collections.ConfigDict:
    c = base_config().optim
    c.update(learning_rate=LR, weight_decay=WD, schedule="constant", warmup_steps=0, clip_norm=0.0,
             decay_mask=decay_mask)
    return c


@functools.cache
def params():
    # Offset from 0 so that decay shows on every leaf (biases and log α start at 0). Jitted: one compile
    # instead of one an initializer.
    return jax.jit(lambda: jax.tree.map(lambda x: x + 1.0, nnx.state(Layers(nnx.Rngs(0)), nnx.Param)))()


def by_name(tree) -> dict:
    return {"/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def one_update_with_zero_gradients(decay_mask: str):
    tx, _ = make_optimizer(optim_config(decay_mask), 10)
    p = params()
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)  # one compile, not one an op
    return by_name(p), by_name(optax.apply_updates(p, updates))


def test_matrices_decay_and_the_rest_do_not():
    before, after = one_update_with_zero_gradients("matrices")
    assert set(before) == DECAYED | KEPT
    for name in DECAYED:
        np.testing.assert_allclose(after[name], before[name] * (1 - LR * WD), rtol=1e-6, err_msg=name)
    for name in KEPT:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_all_decays_everything():
    before, after = one_update_with_zero_gradients("all")
    for name in before:
        np.testing.assert_allclose(after[name], before[name] * (1 - LR * WD), rtol=1e-6, err_msg=name)


def test_either_setting_restores_the_others_optimizer_state():
    p = params()
    states = [make_optimizer(optim_config(m), 10)[0].init(p) for m in ("all", "matrices")]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])


@pytest.mark.parametrize("decay_mask", ["matrices", "all"])
def test_flat_optimizer_state_masks_elementwise(decay_mask):
    """flow_vae's optim.flat_state: the optimizer sees each network raveled into one vector."""
    tx, _ = make_optimizer(optim_config(decay_mask), 10)
    gan = GanOptimizers(tx, tx, flat=True)
    p = {GEN: params(), DISC: params()}
    view, unravel = gan.ravel(p[GEN])
    apply = jax.jit(gan.apply, static_argnums=0)
    new, _, _, _ = apply(GEN, jax.tree.map(jnp.zeros_like, p[GEN]), gan.init(p)[GEN], view)
    before, after = by_name(p[GEN]), by_name(unravel(new))
    for name in before:
        decayed = decay_mask == "all" or name in DECAYED
        np.testing.assert_allclose(after[name], before[name] * (1 - LR * WD if decayed else 1), rtol=1e-6,
                                   err_msg=name)


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="decay_mask"):
        make_optimizer(optim_config("norms"), 10)
