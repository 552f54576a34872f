"""Weight decay on weight matrices only (`optim.decay_mask = "matrices"`).

Decay pulls parameters towards 0: right for the kernels of projections and convolutions, wrong for
norm scales and layer-scale gammas (their neutral value is 1), biases, Snake's log α, embeddings (rows of
rare ids would fade between their updates) and VQ codebooks. Which is which is read from the parameter
tree's paths and shapes, so it also holds for models added later that use the same layers' names.
"""
import jax
import jax.numpy as jnp
import optax

# Parameter names (the attribute holding the nnx.Param) never decayed, whatever their shape.
NO_DECAY = frozenset({"scale", "bias", "gamma", "log_alpha", "codebook"})


def _name(path) -> str:
    """The parameter's attribute name: the last dict key of its path (past nnx's `.value`)."""
    for key in reversed(path):
        if isinstance(key, jax.tree_util.DictKey):
            return str(key.key)
    return ""


def is_decayed(path, x) -> bool:
    name = _name(path)
    return len(x.shape) >= 2 and name not in NO_DECAY and not name.endswith("embed")


def mask_of(params):
    """A bool a leaf of `params` (any pytree of arrays with named paths, e.g. an nnx.State)."""
    return jax.tree_util.tree_map_with_path(is_decayed, params)


def masked_weight_decay(weight_decay: float) -> optax.GradientTransformationExtraArgs:
    """`optax.add_decayed_weights` for the leaves `mask_of` selects (the same state, so checkpoints
    of either setting restore with the other).

    The optimizer may see the parameters in another view than their tree (one raveled vector a
    network, flow_vae's `optim.flat_state`): its caller then passes `decay_mask=` the mask in that view,
    elementwise 0/1."""
    def init(params):
        del params
        return optax.AddDecayedWeightsState()

    def update(updates, state, params=None, *, decay_mask=None, **extra):
        del extra
        mask = mask_of(params) if decay_mask is None else decay_mask
        updates = jax.tree.map(lambda g, p, m: g + weight_decay * jnp.asarray(m, p.dtype) * p, updates, params, mask)
        return updates, state

    return optax.GradientTransformationExtraArgs(init, update)


def flat_mask(tree) -> jax.Array:
    """`mask_of(tree)` elementwise, raveled as `jax.flatten_util.ravel_pytree(tree)` ravels the tree."""
    from jax.flatten_util import ravel_pytree
    full = jax.tree.map(lambda x, m: jnp.full(x.shape, m, x.dtype), tree, mask_of(tree))
    return ravel_pytree(full)[0]
