"""Multi-head attention with RoPE and grouped-query heads (num_kv_heads divides num_heads).

Split into `project_qkv` / `attend` / `project_out` so that a decoder can keep a KV cache: project
the new tokens at their positions, write k, v into the cache, then attend over the cache.
Masks are boolean, True = may attend, shaped [B, T, S] (or broadcastable to it).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param
from speech_jax.layers.rope import apply_rope

_NEG = -1e30  # finite, so a fully masked row gives a uniform (not NaN) softmax


def attention_mask(key_mask: jax.Array | None, q_len: int, kv_len: int, *, causal: bool = False,
                   q_offset: jax.Array | int = 0) -> jax.Array | None:
    """[B|1, T, S] boolean mask from a key padding mask [B, S] and/or causality.

    `q_offset` is the position of the first query within the keys (a KV-cache decode step)."""
    mask = None
    if key_mask is not None:
        mask = key_mask.astype(bool)[:, None, :]
    if causal:
        q_pos = jnp.arange(q_len)[:, None] + q_offset
        c = (jnp.arange(kv_len)[None, :] <= q_pos)[None]
        mask = c if mask is None else mask & c
    return mask


def dot_product_attention(q, k, v, mask, impl: str = "einsum"):
    """q [B,T,H,D], k/v [B,S,K,D] with H % K == 0; mask [B|1,T,S] bool or None -> [B,T,H,D].

    "einsum": explicit fp32 softmax (fastest on the XLA CPU backend);
    "xla": jax.nn.dot_product_attention, which accelerators lower to a fused kernel."""
    b, t, h, d = q.shape
    kh = k.shape[2]
    if impl == "xla":
        m = None if mask is None else jnp.broadcast_to(mask[:, None], (mask.shape[0], 1) + mask.shape[1:])
        return jax.nn.dot_product_attention(q, k, v.astype(q.dtype), mask=m)
    if impl != "einsum":
        raise ValueError(f"unknown attention impl {impl!r}; use 'einsum' or 'xla'")
    qg = q.reshape(b, t, kh, h // kh, d)  # head h = kv_head * group + g
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (d ** -0.5)
    if mask is not None:
        logits = jnp.where(mask[:, None, None], logits, _NEG)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


class Attention(nnx.Module):
    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, *, rope_theta: float = 10000.0, impl: str = "einsum",
                 dtype=jnp.float32, rngs: nnx.Rngs):
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        head_dim = head_dim or d_model // num_heads
        init_in = nnx.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        init_out = nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        self.wq = param(rngs, init_in, (d_model, num_heads, head_dim), ("embed", "heads", "kv"))
        self.wk = param(rngs, init_in, (d_model, num_kv_heads, head_dim), ("embed", "kv_heads", "kv"))
        self.wv = param(rngs, init_in, (d_model, num_kv_heads, head_dim), ("embed", "kv_heads", "kv"))
        self.wo = param(rngs, init_out, (num_heads, head_dim, d_model), ("heads", "kv", "embed"))
        self.rope_theta = rope_theta
        self.impl = impl
        self.dtype = dtype

    def project_qkv(self, x: jax.Array, positions: jax.Array):
        """x [B,T,E], positions [B,T] or [T] -> q [B,T,H,D], k, v [B,T,K,D] (RoPE applied to q, k)."""
        x = x.astype(self.dtype)
        q = jnp.einsum("bte,ehd->bthd", x, self.wq[...].astype(self.dtype))
        k = jnp.einsum("bte,ehd->bthd", x, self.wk[...].astype(self.dtype))
        v = jnp.einsum("bte,ehd->bthd", x, self.wv[...].astype(self.dtype))
        return apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta), v

    def attend(self, q, k, v, mask):
        return dot_product_attention(q, k, v, mask, self.impl)

    def project_out(self, o: jax.Array) -> jax.Array:
        return jnp.einsum("bthd,hde->bte", o, self.wo[...].astype(self.dtype))

    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None) -> jax.Array:
        if positions is None:
            positions = jnp.arange(x.shape[1])
        q, k, v = self.project_qkv(x, positions)
        return self.project_out(self.attend(q, k, v, mask))
