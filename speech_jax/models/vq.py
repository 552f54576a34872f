"""Single-codebook vector quantiser with a straight-through estimator.

Utilisation levers (all switchable from config, measured in the report):
  * factorised codes: look codes up in a low-dimensional space (`code_dim`) projected from the model
    width, optionally l2-normalised so the nearest code is the one with the largest cosine;
  * `update="ema"`: the codebook is an exponential moving average of the encoder outputs assigned to
    each code (k-means in the training step) instead of a parameter trained by a codebook loss;
    it is data-initialised from the first batch and dead codes (EMA share below `dead_ratio` of the
    fair share 1/K) are restarted from random encoder outputs of the batch.
EMA statistics are `VQState` variables (not `nnx.Param`), updated in place in the training step, so
the optimiser never sees them and the training loop carries them as non-parameter state.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import dense, param


class VQState(nnx.Variable):
    """Non-trainable quantiser statistics (EMA codebook, usage)."""


def _l2norm(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def _sample_frames(rng, z_flat, valid_flat, n):
    """n rows of z drawn uniformly (with replacement) from the valid frames."""
    logits = jnp.where(valid_flat, 0.0, -jnp.inf)
    idx = jax.random.categorical(rng, logits, shape=(n,))
    return z_flat[idx]


class VectorQuantizer(nnx.Module):
    def __init__(self, d_in: int, codebook_size: int, code_dim: int, *, l2norm: bool = True,
                 update: str = "ema", ema_decay: float = 0.95, dead_ratio: float = 0.1,
                 data_init: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        if update not in ("ema", "loss"):
            raise ValueError(f"vq update must be 'ema' or 'loss', got {update!r}")
        k = codebook_size
        self.proj_in = dense(rngs, d_in, code_dim, ("embed", None), dtype=dtype)
        self.proj_out = dense(rngs, code_dim, d_in, (None, "embed"), dtype=dtype)
        init = nnx.initializers.normal(1.0 if l2norm else code_dim ** -0.5)
        names = ("codebook", None)
        if update == "loss":
            self.codebook = param(rngs, init, (k, code_dim), names)
        else:
            cb = init(rngs.params(), (k, code_dim), jnp.float32)
            self.codebook = VQState(cb, out_sharding=names)
            self.ema_sum = VQState(cb, out_sharding=names)
        # EMA of the number of frames assigned to each code per step (restarts, dead-code metric).
        self.ema_count = VQState(jnp.ones((k,), jnp.float32), out_sharding=("codebook",))
        self.initialized = VQState(jnp.zeros((), jnp.bool_), out_sharding=())
        self.k, self.code_dim, self.l2norm, self.update = k, code_dim, l2norm, update
        self.ema_decay, self.dead_ratio, self.data_init = ema_decay, dead_ratio, data_init

    def codes(self) -> jax.Array:
        cb = self.codebook[...].astype(jnp.float32)
        return _l2norm(cb) if self.l2norm else cb

    def lookup(self, ids: jax.Array) -> jax.Array:
        """Code ids [B, T] -> decoder-side vectors [B, T, d_in]."""
        return self.proj_out(self.codes()[ids])

    def project(self, x: jax.Array) -> jax.Array:
        z = self.proj_in(x).astype(jnp.float32)  # the distance and losses stay fp32
        return _l2norm(z) if self.l2norm else z

    def nearest(self, z: jax.Array, cb: jax.Array) -> jax.Array:
        dist = (jnp.sum(z * z, -1, keepdims=True) - 2.0 * jnp.einsum("btd,kd->btk", z, cb)
                + jnp.sum(cb * cb, -1))
        return jnp.argmin(dist, axis=-1)

    def __call__(self, x: jax.Array, mask: jax.Array, *, rng: jax.Array | None = None,
                 train: bool = False):
        """x [B,T,d_in], mask [B,T] -> (quantised [B,T,d_in], ids [B,T], aux losses and metrics).

        With train=True and update="ema", the EMA codebook is updated in place (needs `rng`)."""
        z = self.project(x)
        mask_f = mask.astype(jnp.float32)
        n_valid = jnp.maximum(mask_f.sum(), 1.0)
        z_flat, valid_flat = z.reshape(-1, self.code_dim), mask.reshape(-1).astype(bool)
        update = train and self.update == "ema"
        if update:
            init_rng, restart_rng = jax.random.split(rng)
            if self.data_init:  # first training step: codes = random encoder outputs of the batch
                sampled = jax.lax.stop_gradient(_sample_frames(init_rng, z_flat, valid_flat, self.k))
                first = jnp.logical_not(self.initialized[...]) & (mask_f.sum() > 0)
                self.codebook[...] = jnp.where(first, sampled, self.codebook[...])
                fair = mask_f.sum() / self.k
                self.ema_count[...] = jnp.where(first, fair, self.ema_count[...])
                self.ema_sum[...] = jnp.where(first, sampled * fair, self.ema_sum[...])
                self.initialized[...] = self.initialized[...] | first
        cb = self.codes()
        ids = self.nearest(z, cb)
        q = cb[ids]
        sq = lambda a: jnp.sum(a * a, -1)
        commit = jnp.sum(sq(z - jax.lax.stop_gradient(q)) * mask_f) / n_valid
        codebook_loss = jnp.sum(sq(jax.lax.stop_gradient(z) - q) * mask_f) / n_valid
        if self.update == "ema":
            codebook_loss = jnp.zeros((), jnp.float32)
        q_st = z + jax.lax.stop_gradient(q - z)  # straight-through: d q_st / d z = I
        out = self.proj_out(q_st.astype(x.dtype))

        onehot = jax.nn.one_hot(ids, self.k, dtype=jnp.float32) * mask_f[..., None]
        counts = onehot.reshape(-1, self.k).sum(0)
        probs = counts / n_valid
        perplexity = jnp.exp(-jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-10))))
        # Share of codes whose usage EMA is below the restart threshold (before this step's restarts).
        fair = n_valid / self.k
        dead_codes = jnp.mean((self.ema_count[...] < (self.dead_ratio or 0.1) * fair).astype(jnp.float32))
        if train:
            self._update_stats(jax.lax.stop_gradient(z_flat), valid_flat, onehot.reshape(-1, self.k),
                               counts, restart_rng if update else None)
        aux = dict(commit_loss=commit, codebook_loss=codebook_loss, perplexity=perplexity,
                   code_usage=jnp.mean((counts > 0).astype(jnp.float32)), dead_codes=dead_codes)
        return out, ids, aux

    def _update_stats(self, z_flat, valid_flat, onehot_flat, counts, rng):
        d = self.ema_decay
        self.ema_count[...] = d * self.ema_count[...] + (1 - d) * counts
        if rng is None:
            return
        sums = onehot_flat.T @ z_flat                                          # [K, D]
        ema_sum = d * self.ema_sum[...] + (1 - d) * sums
        n = self.ema_count[...]
        # Laplace smoothing keeps rarely used codes finite.
        smoothed = (n + 1e-5) / (n.sum() + self.k * 1e-5) * n.sum()
        codebook = ema_sum / smoothed[:, None]
        if self.dead_ratio > 0:
            n_valid = jnp.maximum(valid_flat.sum(), 1)
            fair = n_valid / self.k
            dead = (n < self.dead_ratio * fair) & (valid_flat.sum() > 0)
            fresh = _sample_frames(rng, z_flat, valid_flat, self.k)
            codebook = jnp.where(dead[:, None], fresh, codebook)
            # A restarted code starts with the fair share so it is not judged dead again at once.
            self.ema_count[...] = jnp.where(dead, fair, n)
            ema_sum = jnp.where(dead[:, None], fresh * fair, ema_sum)
        self.codebook[...] = codebook
        self.ema_sum[...] = ema_sum
