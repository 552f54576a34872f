"""CTC loss over padded batches, shared by the CTC-trained stages (tokenizer head, judge)."""
import jax
import jax.numpy as jnp
import optax


def masked_ctc_loss(logits: jax.Array, frame_mask: jax.Array, labels: jax.Array, label_len: jax.Array,
                    blank_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """(mean per-label CTC loss over the feasible rows, fraction of rows feasible); blank = padding id.

    An alignment needs a frame per label plus a blank between repeated labels: rows too long for their
    frames (or with no labels) have no alignment and infinite loss, so they are left out.
    """
    label_pad = (jnp.arange(labels.shape[1])[None] >= label_len[:, None]).astype(jnp.float32)
    per_seq = optax.ctc_loss(logits, 1.0 - frame_mask.astype(jnp.float32), labels, label_pad, blank_id=blank_id)
    repeats = jnp.sum((labels[:, 1:] == labels[:, :-1]) & (label_pad[:, 1:] == 0), axis=1)
    feasible = (label_len > 0) & (label_len + repeats <= frame_mask.sum(1))
    ok = feasible.astype(jnp.float32)
    loss = jnp.sum(jnp.where(feasible, per_seq / jnp.maximum(label_len, 1), 0.0)) / jnp.maximum(ok.sum(), 1.0)
    return loss, jnp.mean(ok)
