"""ODE samplers for flow matching: integrate dx/dt = v(x, t) from noise (t = 0) to data (t = 1).

Pure jnp, jit-able: the number of steps is static (the grid's length) and the loop is a
`lax.fori_loop`, so the compiled program does not grow with the step count.
"""
import jax
import jax.numpy as jnp


def time_grid(steps: int, kind: str = "uniform", sway_coef: float = -1.0) -> jax.Array:
    """[steps + 1] times from 0 to 1. "cosine": t' = 1 − cos(πt/2) (small steps near the noise end);
    "sway" (F5-TTS): t' = t + s·(cos(πt/2) − 1 + t), s < 0 also crowds the noise end."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = jnp.linspace(0.0, 1.0, steps + 1, dtype=jnp.float32)
    if kind == "uniform":
        return t
    if kind == "cosine":
        return 1.0 - jnp.cos(0.5 * jnp.pi * t)
    if kind == "sway":
        return t + sway_coef * (jnp.cos(0.5 * jnp.pi * t) - 1.0 + t)
    raise ValueError(f"unknown time grid {kind!r}; use 'uniform', 'cosine' or 'sway'")


def cfg_velocity(v_cond, v_uncond, w):
    """Classifier-free guidance: (1 + w)·v_cond − w·v_uncond (w = 0: conditional only)."""
    return (1.0 + w) * v_cond - w * v_uncond


def solve(velocity_fn, x0, grid, *, method: str = "euler", fixed=None, fixed_mask=None):
    """Integrates dx/dt = velocity_fn(x, t [B]) over `grid` [steps+1] from x0 [B,F,D]; returns x (fp32).

    "euler": x += dt·v(x, t). "midpoint": x += dt·v(x + dt/2·v(x, t), t + dt/2) (second order).
    `fixed` [B,F,D] with `fixed_mask` [B,F]: those frames are held at `fixed` at the start and in
    every state the velocity sees or the solver returns (the prompt in latent flow matching)."""
    if method not in ("euler", "midpoint"):
        raise ValueError(f"unknown ODE method {method!r}; use 'euler' or 'midpoint'")
    x0 = x0.astype(jnp.float32)
    grid = jnp.asarray(grid, jnp.float32)
    b = x0.shape[0]

    if fixed is None:
        pin = lambda x: x  # noqa: E731
    else:
        keep = jnp.broadcast_to(fixed_mask.astype(bool)[..., None], x0.shape)
        fixed = fixed.astype(jnp.float32)
        pin = lambda x: jnp.where(keep, fixed, x)  # noqa: E731

    def v(x, t):
        return velocity_fn(x, jnp.full((b,), t, jnp.float32)).astype(jnp.float32)

    def step(i, x):
        t, dt = grid[i], grid[i + 1] - grid[i]
        if method == "euler":
            return pin(x + dt * v(x, t))
        x_mid = pin(x + 0.5 * dt * v(x, t))
        return pin(x + dt * v(x_mid, t + 0.5 * dt))

    return jax.lax.fori_loop(0, grid.shape[0] - 1, step, pin(x0))


def sample(model, x0, tokens, frame_mask, spk, prompt, prompt_mask, *, steps: int = 10,
           method: str = "euler", grid_kind: str = "cosine", cfg_weight: float = 0.7, sway_coef: float = -1.0):
    """Latents [B,F,D] (fp32) from a FlowMatchingDiT, with classifier-free guidance.

    x0 [B,F,D] is the starting noise, N(0, I) drawn by the caller from a seed (so a seed fixes the
    output). The conditional and unconditional passes run as ONE model call on a doubled batch
    (second half: all conditions dropped); the conditions are computed once for the whole solve.
    Prompt frames stay exactly at `prompt`; padded frames come back as zeros."""
    b = x0.shape[0]
    both = lambda a: jnp.concatenate([a, a], axis=0)  # noqa: E731
    drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
    cond = model.conditions(both(tokens), both(frame_mask), both(spk), both(prompt), both(prompt_mask), drop)

    def velocity(x, t):
        v = model.velocity(both(x), both(t), cond)
        return cfg_velocity(v[:b], v[b:], cfg_weight)

    x = solve(velocity, x0, time_grid(steps, grid_kind, sway_coef), method=method,
              fixed=prompt, fixed_mask=prompt_mask)
    return jnp.where(frame_mask.astype(bool)[..., None], x, 0.0)
