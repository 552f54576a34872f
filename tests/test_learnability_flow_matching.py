"""Latent flow matching learns: a tiny DiT trained with the stage's own OT-CFM loss (prompts and CFG
drops included) on a few latent sequences, each with its own tokens and speaker vector, then samples
them back from fresh noise with the inference ODE solver. Mismatched conditions give another
utterance's latents, so the sample follows the conditions; broken conditioning or a wrong time
convention cannot get close."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from experiments.flow_matching import tiny
from speech_jax.infer import ode
from speech_jax.models import cfm
from speech_jax.models.flow_matching import FlowMatchingDiT

from overfit import OPTIMIZED

ROWS, TOKENS, DIM, SPK = 3, 8, 8, 16
FRAMES = 2 * TOKENS


def _data():
    rs = np.random.RandomState(0)
    # Smooth latent trajectories, like a VAE's: sums of slow sinusoids with per-row phases.
    t = np.arange(FRAMES)[None, :, None] / FRAMES
    freq, phase = rs.uniform(0.5, 2.0, (ROWS, 1, DIM)), rs.uniform(0, 2 * np.pi, (ROWS, 1, DIM))
    x1 = np.sin(2 * np.pi * freq * t + phase).astype(np.float32)
    tokens = rs.randint(0, 16, (ROWS, TOKENS)).astype(np.int32)
    spk = rs.randn(ROWS, SPK).astype(np.float32)
    return jnp.asarray(x1), jnp.asarray(tokens), jnp.asarray(spk)


@pytest.fixture(scope="module")
def trained():
    cfg = tiny.model_defaults()
    cfg.update(dict(latent_dim=DIM, codebook_size=16, spk_dim=SPK, d_model=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, mlp_dim=128, token_encoder_layers=1))
    model = FlowMatchingDiT(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x1, tokens, spk = _data()
    mask = jnp.ones((ROWS, FRAMES), bool)
    tx = optax.adam(2e-3)
    copies = lambda a: jnp.tile(a, (4,) + (1,) * (a.ndim - 1))  # noqa: E731  4 draws of (x0, t) a row

    @functools.partial(jax.jit, compiler_options=OPTIMIZED)
    def step(p, opt, rng):
        def loss(p):
            return cfm.cfm_loss(nnx.merge(graphdef, p, rest), copies(x1), copies(mask), copies(tokens),
                                copies(spk), rng, drop_prob=0.1)[0]
        value, g = jax.value_and_grad(loss)(p)
        updates, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, updates), opt, value

    opt = tx.init(params)
    for i in range(600):
        params, opt, _ = step(params, opt, jax.random.key(i))
    return nnx.merge(graphdef, params, rest), x1, tokens, spk, mask


def _sample(model, tokens, spk, mask, seed):
    """10 Euler steps of the conditional field (no guidance: it extrapolates past a memorised target)."""
    x0 = jax.random.normal(jax.random.key(seed), (ROWS, FRAMES, DIM))
    none = jnp.zeros_like(mask)
    return jax.jit(lambda x0: ode.sample(model, x0, tokens, mask, spk, jnp.zeros_like(x0), none, steps=10,
                                         cfg_weight=0.0))(x0)


def test_samples_reproduce_the_memorised_latents(trained):
    model, x1, tokens, spk, mask = trained
    err = lambda z, ref: float(jnp.linalg.norm(z - ref) / jnp.linalg.norm(ref))  # noqa: E731
    for seed in (1, 2):  # any noise: the conditions fix the output
        assert err(_sample(model, tokens, spk, mask, seed), x1) < 0.2
    # Each row's conditions moved to the next row: the samples follow them.
    rolled = _sample(model, jnp.roll(tokens, 1, 0), jnp.roll(spk, 1, 0), mask, 1)
    assert err(rolled, jnp.roll(x1, 1, 0)) < 0.2 and err(rolled, x1) > 0.8
