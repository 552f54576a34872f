"""The train state: a pytree of arrays, so it can be jitted, sharded, donated and checkpointed."""
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any          # nnx.State of nnx.Param
    rest: Any            # nnx.State of every other model variable (e.g. codebook usage statistics)
    opt_state: Any
    skipped: jax.Array   # steps whose gradients were not finite (update skipped)
    ema: Any = None      # `optim.ema_decay` > 0: the moving average of `params`, what a finished stage serves


# Parameters under a `frozen` attribute (pretrained parts of an earlier stage) are not trained: they
# travel in `rest`, so they get no gradient and no optimizer state. Low-rank adapters train wherever
# they sit: a frozen model with adapters is what a LoRA stage trains (speech_jax/train/tasks/style.py).
TRAINABLE = nnx.Any(nnx.All(nnx.Param, nnx.Not(nnx.PathContains("frozen"))), nnx.LoRAParam)
NOT_TRAINABLE = nnx.Not(TRAINABLE)


def split_model(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, TRAINABLE, ...)
    return graphdef, params, rest


def init_train_state(model: nnx.Module, tx, ema: bool = False) -> tuple[Any, TrainState]:
    graphdef, params, rest = split_model(model)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                       opt_state=tx.init(params), skipped=jnp.zeros((), jnp.int32),
                       ema=jax.tree.map(jnp.copy, params) if ema else None)
    return graphdef, state


def ema_update(ema, params, updates_before: jax.Array, decay: float):
    """The weights' moving average after an update: decay min(`decay`, n / (n + 10)) after n earlier
    updates, so the first update replaces it (the initialisation, and weights load_pretrained put in after it,
    leave no trace) and early on it averages about the last tenth of the run."""
    n = updates_before.astype(jnp.float32)
    d = jnp.minimum(decay, n / (n + 10.0))
    return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, params)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree.leaves(params))
