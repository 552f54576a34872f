"""Flow matching models the Flow-VAE's latents standardised on the data (`model.latent_norm`): the statistics
are measured on the extracted training latents when a run starts, training is blind to the scale the
Flow-VAE's encoder chose, and sampling (evaluation and the serving program) hands back Flow-VAE latents."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from data_pipelines.extracted import latent_statistics
from speech_jax.infer.backend import Spec, Template, make_programs
from speech_jax.models.latent_norm import MIN_STD, scales
from speech_jax.train.loop import Trainer
from stages import STEPS, stage_config

MESH_1 = ["--config.mesh.num_devices=1", "--config.mesh.data=1", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"]


def test_global_scale_keeps_the_channels_relative_sizes():
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([3.0, 4.0, 0.0])
    shift, scale = scales("channel", mean, std)
    np.testing.assert_allclose(shift, mean)
    np.testing.assert_allclose(scale, [3.0, 4.0, MIN_STD])  # a constant channel is shifted, not blown up
    _, scale = scales("global", mean, std)
    np.testing.assert_allclose(scale, np.full(3, np.sqrt(25 / 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="no statistics"):
        scales("none", mean, std)


@pytest.fixture(scope="module")
def stage(tiny_corpus, tiny_stages, tmp_path_factory):
    """A flow-matching run on the tiny stages with per-channel statistics: (trainer, model, a batch)."""
    config = stage_config("flow_matching", tiny_corpus, f"--config.pretrained.ar_workdir={tiny_stages['ar']}",
                          f"--config.pretrained.flow_vae_workdir={tiny_stages['flow_vae']}",
                          "--config.model.latent_norm=channel", *STEPS, *MESH_1)
    trainer = Trainer(config, str(tmp_path_factory.mktemp("fm_latent_norm")))
    state = trainer.initial_state()
    model = nnx.merge(trainer.graphdef, state.params, state.rest)
    batch = trainer.to_device(next(trainer.data_iterator("train", training=True)))
    return trainer, model, batch


def test_statistics_are_measured_on_the_extracted_training_latents(stage, tiny_stages):
    _, model, _ = stage
    want = latent_statistics(tiny_stages["extracted"]["directory"])
    assert want["frames"] > 100
    np.testing.assert_allclose(model.latent_norm.mean[...], want["mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.latent_norm.std[...], np.maximum(want["std"], MIN_STD), rtol=1e-5)
    assert not np.allclose(want["std"], 1.0, atol=0.05) or not np.allclose(want["mean"], 0.0, atol=0.05)


def _rescaled(model, batch, a, b):
    """The same data from a Flow-VAE whose encoder gives a·z + b, and the statistics measured on it."""
    other = nnx.clone(model)
    other.latent_norm.mean.value = a * model.latent_norm.mean[...] + b
    other.latent_norm.std.value = a * model.latent_norm.std[...]
    return other, dict(batch, latents=a * batch["latents"].astype(jnp.float32) + b)


def test_training_is_blind_to_the_flow_vaes_latent_scale(stage):
    """An encoder that scales its means 17× (as under a σ floor) poses flow matching the same problem once
    the latents are standardised; without the statistics the loss is another one."""
    trainer, model, batch = stage
    loss = jax.jit(lambda m, b: trainer.task.loss_fn(m, b, jax.random.key(3), jnp.int32(0))[0])
    base = float(loss(model, batch))
    other, scaled = _rescaled(model, batch, 17.0, 3.0)
    np.testing.assert_allclose(float(loss(other, scaled)), base, rtol=1e-4)
    raw = nnx.clone(model)
    raw.latent_norm = None
    assert float(loss(raw, scaled)) > 10 * base


def test_the_serving_program_samples_flow_vae_latents(stage):
    """fm_sample takes and returns Flow-VAE latents: under rescaled statistics its output is the same affine
    map of the original's, prompt frames included (they come out as given)."""
    _, model, batch = stage
    b, f = 2, 2 * batch["tokens"].shape[1]
    d = int(model.latent_norm.mean[...].shape[0])
    spec = Spec(sample_rate=16000, hop=320, latent_dim=d, codebook_size=32, d_model=16, spk_dim=16, text_len=8,
                prompt_tokens=0, max_new_tokens=f // 2, fm_steps=2)
    other, _ = _rescaled(model, batch, 5.0, -1.0)
    x0 = jax.random.normal(jax.random.key(0), (b, f, d))
    tokens, frame_mask = batch["tokens"][:b], jnp.ones((b, f), bool)
    spk = jax.random.normal(jax.random.key(1), (b, 16))
    prompt = jax.random.normal(jax.random.key(2), (b, f, d)) * model.latent_norm.std[...] + model.latent_norm.mean[...]
    prompt_mask = jnp.arange(f)[None].repeat(b, 0) < 4

    def run(m, p):
        template, weights = Template.split(m)
        fm_sample = make_programs({"tokenizer": None, "ar": None, "flow_matching": template}, spec)["fm_sample"]
        return np.asarray(jax.jit(fm_sample)(weights, x0, tokens, frame_mask, spk, p, prompt_mask, 0.7))

    z = run(model, prompt)
    np.testing.assert_allclose(z[:, :4], prompt[:, :4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(other, 5.0 * prompt - 1.0), 5.0 * z - 1.0, rtol=1e-4, atol=1e-4)
