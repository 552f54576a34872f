"""Optimizer and learning-rate schedule from the `optim` config block."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speech_jax.train.decay_mask import masked_weight_decay


def learning_rate_schedule(cfg, total_steps: int):
    """`schedule(count, steps=total_steps)`: the learning rate after `count` updates of a schedule `steps`
    long. `steps` may be traced: a schedule fitted to the time left (`train.fit_schedule_at`) keeps its
    length in the optimizer's state. The cosine is written out because optax's refuses a traced length."""
    peak = cfg.learning_rate
    warmup = max(int(cfg.warmup_steps), 0)
    if cfg.schedule == "exponential":
        after = optax.exponential_decay(peak, transition_steps=1, decay_rate=cfg.decay_rate,
                                        end_value=peak * cfg.end_learning_rate_factor)
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule != "cosine":
        raise ValueError(f"optim.schedule must be cosine, exponential or constant, got {cfg.schedule!r}")

    def cosine(count, steps):
        decay_steps = int(cfg.decay_steps) or jnp.maximum(steps - warmup, 1)
        progress = jnp.clip(count / decay_steps, 0.0, 1.0)
        alpha = cfg.end_learning_rate_factor
        return peak * (alpha + (1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))

    def schedule(count, steps=total_steps):
        lr = cosine(count - warmup, steps) if cfg.schedule == "cosine" else after(count - warmup)
        return jnp.where(count < warmup, peak * count / max(warmup, 1), lr) if warmup else lr

    return schedule


class FittedScheduleState(NamedTuple):
    count: jax.Array           # updates applied
    schedule_steps: jax.Array  # the schedule's length: train.steps, until the loop fits it to the time left


def scale_by_fitted_schedule(schedule, total_steps: int) -> optax.GradientTransformation:
    """optax.scale_by_learning_rate with the schedule's length in its state, where the loop can set it."""
    def init(params):
        del params
        return FittedScheduleState(jnp.zeros([], jnp.int32), jnp.asarray(total_steps, jnp.int32))

    def update(updates, state, params=None):
        del params
        lr = schedule(state.count, state.schedule_steps)
        updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
        return updates, state._replace(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init, update)


def _is_length(path) -> bool:
    return getattr(path[-1], "name", None) == "schedule_steps"  # FittedScheduleState's field


def schedule_steps(opt_state) -> jax.Array | None:
    """The fitted schedule's length in an optimizer state (None: a fixed schedule). A state of several
    optimizers (the Flow-VAE's GAN) holds one per optimizer, all set together (with_schedule_steps)."""
    found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0] if _is_length(path)]
    return found[0] if found else None


def with_schedule_steps(opt_state, length: int):
    """The optimizer state with the schedule's length set, each copy its own array placed as the old one was:
    the step donates them, and a buffer cannot be donated twice."""
    def set_length(path, leaf):
        if not _is_length(path):
            return leaf
        return jax.make_array_from_callback((), leaf.sharding, lambda _: np.asarray(length, leaf.dtype))

    return jax.tree_util.tree_map_with_path(set_length, opt_state)


def learning_rate_now(schedule, opt_state, count):
    """The learning rate of the update after `count` applied ones, at the state's schedule length."""
    steps = schedule_steps(opt_state)
    return schedule(count) if steps is None else schedule(count, steps)


def make_optimizer(cfg, total_steps: int, fitted: bool = False):
    """Global-norm clipping, then the optimizer; returns the schedule too for logging. `fitted`: the
    schedule's length lives in the optimizer state (scale_by_fitted_schedule)."""
    schedule = learning_rate_schedule(cfg, total_steps)
    lr = scale_by_fitted_schedule(schedule, total_steps) if fitted else optax.scale_by_learning_rate(schedule)
    decay = cfg.get("decay_mask", "all")  # .get: configs saved before the field existed
    adam = optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    # optax.adamw and optax.adam are these chains (the same state, so checkpoints restore either way).
    if cfg.name == "adamw" and decay == "matrices":
        opt = optax.chain(adam, masked_weight_decay(cfg.weight_decay), lr)
    elif cfg.name == "adamw" and decay == "all":
        opt = optax.chain(adam, optax.add_decayed_weights(cfg.weight_decay), lr)
    elif cfg.name == "adamw":
        raise ValueError(f"optim.decay_mask must be all or matrices, got {decay!r}")
    elif cfg.name == "adam":
        opt = optax.chain(adam, lr)
    else:
        raise ValueError(f"optim.name must be adamw or adam, got {cfg.name!r}")
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm and cfg.clip_norm > 0 else []
    return optax.chain(*chain, opt), schedule
