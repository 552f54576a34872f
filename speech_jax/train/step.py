"""Pure train and eval steps built from a task's `loss_fn` / `eval_fn`.

A task with two optimizers (GAN) supplies its own `train_step` with the same signature.
"""
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from speech_jax.train.accumulate import accumulate_gradients
from speech_jax.train.optim import learning_rate_now
from speech_jax.train.state import NOT_TRAINABLE, TrainState, ema_update


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def select_tree(pred, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_train_step(task, graphdef, tx, schedule, accum_steps: int = 1, ema_decay: float = 0.0):
    """`accum_steps` > 1 averages the gradients of that many micro-batches of the batch (accumulate.py);
    `ema_decay` > 0 keeps the weights' moving average in `state.ema` (state.ema_update)."""
    def train_step(state: TrainState, batch, rng):
        def loss_of(params, rest, batch, rng):
            # copy: the merged variables belong to this trace, so the task may update non-Param state.
            model = nnx.merge(graphdef, params, rest, copy=True)
            loss, metrics = task.loss_fn(model, batch, rng, state.step)
            return loss, (metrics, nnx.state(model, NOT_TRAINABLE))

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        (loss, (metrics, rest)), grads = accumulate_gradients(grad_fn, state.params, state.rest, batch, rng,
                                                              accum_steps)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite loss or gradient skips the whole update (params, optimizer and model state).
        finite = jnp.isfinite(loss) & all_finite(grads)
        new = TrainState(
            step=state.step + 1,
            params=select_tree(finite, params, state.params),
            rest=select_tree(finite, rest, state.rest),
            opt_state=select_tree(finite, opt_state, state.opt_state),
            skipped=state.skipped + (~finite).astype(jnp.int32),
            ema=None if state.ema is None else select_tree(
                finite, ema_update(state.ema, params, state.step - state.skipped, ema_decay), state.ema),
        )
        metrics = dict(metrics)
        # optax's schedule counts applied updates only, so skipped steps do not advance it.
        metrics.update(loss=loss, grad_norm=optax.global_norm(grads),
                       learning_rate=learning_rate_now(schedule, state.opt_state, state.step - state.skipped),
                       skipped_steps=new.skipped)
        return new, metrics

    return train_step


def make_eval_step(task, graphdef):
    """Returns the task's eval outputs and the batch's integer fields (global, for host-side metrics)."""
    def eval_step(state: TrainState, batch):
        model = nnx.merge(graphdef, state.params, state.rest)
        labels = {k: v for k, v in batch.items() if jnp.issubdtype(v.dtype, jnp.integer)}
        return task.eval_fn(model, batch), labels
    return eval_step
