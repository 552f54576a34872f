"""OT-CFM (optimal-transport conditional flow matching) objective on latents; pure functions, fp32.

Path from noise x0 ~ N(0, I) at t = 0 to data x1 at t = 1:
    x_t = (1 − (1 − σ_min)·t)·x0 + t·x1,       target velocity u = dx_t/dt = x1 − (1 − σ_min)·x0.

Prompt (as in CosyVoice 2): with probability `prompt_prob` a random prefix of the utterance is given
to the model as ground-truth latent and excluded from the loss. On prompt frames x_t is ALSO the clean
x1: the sampler (`speech_jax.infer.ode.sample`) holds prompt frames fixed at the prompt latent for the
whole solve, so training shows the model the same thing. Padded frames never enter the loss.
"""
import jax
import jax.numpy as jnp


def _expand(t: jax.Array, like: jax.Array) -> jax.Array:
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def interpolate(x0, x1, t, sigma_min: float = 1e-6):
    """x_t on the OT path; t [B] broadcasts over the remaining axes."""
    t = _expand(t.astype(jnp.float32), x0)
    return (1.0 - (1.0 - sigma_min) * t) * x0 + t * x1


def target_velocity(x0, x1, sigma_min: float = 1e-6):
    return x1 - (1.0 - sigma_min) * x0


def sample_time(rng, batch: int, kind: str = "uniform", mean: float = 0.0, std: float = 1.0) -> jax.Array:
    """t [batch] in (0, 1): uniform, or logit-normal (sigmoid of N(mean, std²), more mass mid-path)."""
    if kind == "uniform":
        return jax.random.uniform(rng, (batch,), jnp.float32)
    if kind == "logit_normal":
        return jax.nn.sigmoid(mean + std * jax.random.normal(rng, (batch,), jnp.float32))
    raise ValueError(f"unknown time sampling {kind!r}; use 'uniform' or 'logit_normal'")


def sample_prompt(rng, frame_len, prob: float, max_frac: float = 0.3, min_frac: float = 0.0, *,
                  num_frames: int) -> jax.Array:
    """prompt_mask [B, num_frames] bool: with probability `prob` a prefix of floor(u·len) frames,
    u ~ U[min_frac, max_frac], is the prompt; otherwise there is none."""
    if not 0.0 <= min_frac <= max_frac < 1.0:
        raise ValueError(f"need 0 <= min_frac <= max_frac < 1, got {min_frac}, {max_frac}")
    k_use, k_frac = jax.random.split(rng)
    b = frame_len.shape[0]
    use = jax.random.bernoulli(k_use, prob, (b,))
    frac = jax.random.uniform(k_frac, (b,), jnp.float32, min_frac, max_frac)
    length = jnp.where(use, jnp.floor(frac * frame_len.astype(jnp.float32)).astype(jnp.int32), 0)
    return jnp.arange(num_frames)[None] < length[:, None]


def loss_weights(frame_mask, prompt_mask) -> jax.Array:
    """[B,F] fp32: 1 on the frames the loss counts (valid and not prompt), else 0."""
    return (frame_mask.astype(bool) & ~prompt_mask.astype(bool)).astype(jnp.float32)


def masked_mse(pred, target, weights) -> jax.Array:
    """Mean squared error over the weighted frames and all channels (fp32)."""
    err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)) * weights[..., None]
    return jnp.sum(err) / jnp.maximum(jnp.sum(weights) * pred.shape[-1], 1.0)


def cfm_loss(model, x1, frame_mask, tokens, spk, rng, *, sigma_min: float = 1e-6, prompt_prob: float = 0.5,
             prompt_max_frac: float = 0.3, prompt_min_frac: float = 0.0, drop_prob: float = 0.2,
             time_sampling: str = "uniform", time_mean: float = 0.0, time_std: float = 1.0):
    """OT-CFM loss of `model(x_t, t, tokens, frame_mask, spk, prompt, prompt_mask, drop) -> v`.

    x1 [B,F,D] clean latents, frame_mask [B,F] bool, tokens [B,F/2], spk [B,S], rng a PRNG key.
    Draws x0, t, the prompt and the CFG drop flags (all conditions of an example dropped with
    probability `drop_prob`). Returns (loss, metrics)."""
    x1 = x1.astype(jnp.float32)
    b, f, _ = x1.shape
    frame_mask = frame_mask.astype(bool)
    k_x0, k_t, k_prompt, k_drop = jax.random.split(rng, 4)
    x0 = jax.random.normal(k_x0, x1.shape, jnp.float32)
    t = sample_time(k_t, b, time_sampling, time_mean, time_std)
    prompt_mask = sample_prompt(k_prompt, frame_mask.sum(1), prompt_prob, prompt_max_frac, prompt_min_frac,
                                num_frames=f) & frame_mask
    drop = jax.random.bernoulli(k_drop, drop_prob, (b,))

    pm = prompt_mask[..., None]
    prompt = jnp.where(pm, x1, 0.0)
    x_t = jnp.where(pm, x1, interpolate(x0, x1, t, sigma_min))
    v = model(x_t, t, tokens, frame_mask, spk, prompt, prompt_mask, drop)
    weights = loss_weights(frame_mask, prompt_mask)
    loss = masked_mse(v, target_velocity(x0, x1, sigma_min), weights)
    valid = jnp.maximum(frame_mask.sum(), 1)
    metrics = dict(loss=loss, prompt_frac=prompt_mask.sum() / valid, drop_frac=jnp.mean(drop.astype(jnp.float32)),
                   loss_frames=jnp.sum(weights))
    return loss, metrics
