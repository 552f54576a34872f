"""Optimizer and learning-rate schedule from the `optim` config block."""
import optax

from speech_jax.train.decay_mask import masked_weight_decay


def learning_rate_schedule(cfg, total_steps: int) -> optax.Schedule:
    peak = cfg.learning_rate
    warmup = max(int(cfg.warmup_steps), 0)
    decay_steps = int(cfg.decay_steps) or max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_learning_rate_factor)
    elif cfg.schedule == "exponential":
        after = optax.exponential_decay(peak, transition_steps=1, decay_rate=cfg.decay_rate,
                                        end_value=peak * cfg.end_learning_rate_factor)
    elif cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    else:
        raise ValueError(f"optim.schedule must be cosine, exponential or constant, got {cfg.schedule!r}")
    if not warmup:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then the optimizer; returns the schedule too for logging."""
    schedule = learning_rate_schedule(cfg, total_steps)
    decay = cfg.get("decay_mask", "all")  # .get: configs saved before the field existed
    if cfg.name == "adamw" and decay == "matrices":  # optax.adamw's chain with the decay masked
        opt = optax.chain(optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
                          masked_weight_decay(cfg.weight_decay), optax.scale_by_learning_rate(schedule))
    elif cfg.name == "adamw" and decay == "all":
        opt = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
    elif cfg.name == "adamw":
        raise ValueError(f"optim.decay_mask must be all or matrices, got {decay!r}")
    elif cfg.name == "adam":
        opt = optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    else:
        raise ValueError(f"optim.name must be adamw or adam, got {cfg.name!r}")
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm and cfg.clip_norm > 0 else []
    return optax.chain(*chain, opt), schedule
