"""Gradient accumulation: one step's global batch as `k` micro-batches in a `lax.scan` inside the jitted step.

Why a scan rather than `optax.MultiSteps`: the loop, the data pipeline, the learning-rate schedule, the
skip-on-non-finite rule and checkpoints all keep counting whole steps of one global batch, and the
optimizer state keeps its tree (MultiSteps adds a gradient accumulator to it, so old checkpoints would
not restore). Activation memory is that of one micro-batch; the compiled program holds the loss once.

The gradient is the mean of the micro-batches' gradients: the large batch's gradient when the task's
loss is a mean of per-example terms of equal weight. A loss normalised by a count that varies between
micro-batches (e.g. non-padding tokens) gets the mean of micro-batch means instead, as with MultiSteps.
Scalar metrics are averaged likewise; non-Param model state (e.g. EMA statistics) is updated by each
micro-batch in turn.
"""
import jax
import jax.numpy as jnp


def split_microbatches(batch: dict, k: int) -> dict:
    """Each field (B, ...) -> (k, B/k, ...); micro-batch i holds rows i, i+k, i+2k, ...

    Strided rather than contiguous: each device's block of a batch-sharded field splits evenly across the
    micro-batches, so every micro-batch stays spread over all devices with no data movement."""
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"batch of {x.shape[0]} does not split into {k} micro-batches")
        return x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, batch)


def accumulate_gradients(grad_fn, params, rest, batch: dict, rng, k: int):
    """`grad_fn(params, rest, batch, rng) -> ((loss, (metrics, rest)), grads)` over `k` micro-batches:
    the same structure with loss, metrics and grads averaged and `rest` threaded through in order."""
    if k == 1:
        return grad_fn(params, rest, batch, rng)
    micro = split_microbatches(batch, k)
    first = jax.tree.map(lambda x: x[0], micro)
    (loss_s, (metrics_s, _)), grads_s = jax.eval_shape(grad_fn, params, rest, first, rng)
    # Sums in float32 (integer metrics such as token counts become their mean).
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), (loss_s, metrics_s, grads_s))

    def body(carry, xs):
        rest, sums = carry
        i, mb = xs
        (loss, (metrics, rest)), grads = grad_fn(params, rest, mb, jax.random.fold_in(rng, i))
        sums = jax.tree.map(lambda s, x: s + x.astype(jnp.float32), sums, (loss, metrics, grads))
        return (rest, sums), None

    (rest, sums), _ = jax.lax.scan(body, (rest, zeros), (jnp.arange(k), micro))
    loss, metrics, grads = jax.tree.map(lambda s: s / k, sums)
    grads = jax.tree.map(lambda g, s: g.astype(s.dtype), grads, grads_s)
    return (loss, (metrics, rest)), grads
