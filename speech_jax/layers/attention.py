"""Multi-head attention with RoPE and grouped-query heads (num_kv_heads divides num_heads).

Split into `project_qkv` / `attend` / `project_out` so that a decoder can keep a KV cache: project
the new tokens at their positions, write k, v into the cache, then attend over the cache.
Masks are boolean, True = may attend, shaped [B, T, S] (or broadcastable to it).

Implementations (`impl`), all computing the same function:
  "einsum"   explicit fp32 softmax, differentiated by autodiff: the plain reference;
  "xla"      `jax.nn.dot_product_attention`, which accelerators lower to a fused kernel;
  "blocked"  for the XLA CPU backend: the query axis in blocks (under a causal mask a block computes only
             the keys up to its end, skipping the masked upper triangle) and a hand-written backward that
             keeps the [T, S] arrays in place (autodiff transposes them) and needs no [T, S] reduction;
  "splash"   TPU: Pallas splash attention, "cudnn" GPU: cuDNN flash attention, both with structural
             masks (`key_valid` / `key_lengths`, causality; layers/fused_attention.py); a mask they cannot
             describe (cross-attention, a KV-cache step) falls back to "xla";
  "auto"     "blocked" on CPU, "splash" on TPU, "cudnn" on GPU for bf16/fp16 ("xla" for fp32). The
             platform is the active mesh's (`sharding.activation_rules`), so a step compiled ahead of time
             for a TPU topology from a CPU host gets the TPU kernel.
"""
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax import sharding
from speech_jax.layers import fused_attention
from speech_jax.layers.lora import LoRA
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


IMPLS = ("einsum", "xla", "blocked", "splash", "cudnn", "auto")
CAUSAL_BLOCK = 48  # query rows per block of the "blocked" causal attention (measured best at T ~ 350)


def _platform() -> str:
    mesh = sharding.active_mesh()
    return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def resolve_impl(impl: str, dtype=None) -> str:
    """"auto" -> the implementation for the platform (see the module docstring)."""
    if impl not in IMPLS:
        raise ValueError(f"unknown attention impl {impl!r}; use one of {IMPLS}")
    if impl == "auto":
        platform = _platform()
        if platform == "cpu":
            return "blocked"
        if platform == "tpu":
            return "splash"
        return "cudnn" if dtype is not None and jnp.dtype(dtype).itemsize == 2 else "xla"
    return impl


def dot_product_attention(q, k, v, mask, impl: str = "einsum", *, causal: bool = False,
                          key_valid=None, key_lengths=None):
    """q [B,T,H,D], k/v [B,S,K,D] with H % K == 0; mask [B|1,T,S] bool or None -> [B,T,H,D].

    `causal=True` promises that the mask hides every key after its query (T == S, query t is key t);
    "blocked" then skips the upper triangle. A row with no visible key attends uniformly to the keys
    its block computes ("einsum": to all S keys); such rows should be padding whose output is unused.

    `key_valid` [B,S] (self-attention) promises that on every valid query row the mask is exactly the
    valid keys (and causality); `key_lengths` [B] further that the valid keys are a prefix. The fused
    kernels then use these instead of the mask, which XLA drops unless another implementation reads it."""
    impl = resolve_impl(impl, q.dtype)
    b, t, h, d = q.shape
    kh = k.shape[2]
    structural = t == k.shape[1] and (mask is None or key_valid is not None)
    if impl == "splash":
        if structural:
            return fused_attention.splash(q, k, v, key_valid, causal=causal, platform=_platform())
        impl = "xla"
    if impl == "cudnn":
        if structural or mask is not None:
            return fused_attention.cudnn(q, k, v, mask, key_lengths if structural else None,
                                         causal=causal and structural)
        impl = "xla"
    if impl == "xla":
        m = None if mask is None else jnp.broadcast_to(mask[:, None], (mask.shape[0], 1) + mask.shape[1:])
        return jax.nn.dot_product_attention(q, k, v.astype(q.dtype), mask=m)
    if impl == "blocked":
        qg = (q * jnp.asarray(d ** -0.5, q.dtype)).reshape(b, t, kh, h // kh, d).transpose(0, 2, 3, 1, 4)
        if mask is not None:
            mask = jnp.broadcast_to(mask, (mask.shape[0], t, k.shape[1]))
        o = _blocked(qg, k.transpose(0, 2, 1, 3), v.astype(q.dtype).transpose(0, 2, 1, 3), mask,
                     _query_blocks(t, k.shape[1], causal))
        return o.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
    qg = q.reshape(b, t, kh, h // kh, d)  # head h = kv_head * group + g
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits * (d ** -0.5)
    if mask is not None:
        logits = jnp.where(mask[:, None, None], logits, _NEG)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


# --- "blocked": query blocks, causal block skipping, hand-written backward ---------------------------
# Layout: q [B,K,G,T,D] (pre-scaled), k/v [B,K,S,D]; inside a block the G·c query rows of a kv head
# form the rows of one matmul. `blocks` is a static tuple of (q0, q1, s1): queries [q0, q1) see keys
# [0, s1). The forward saves each block's probabilities for the backward.

def _query_blocks(t: int, s: int, causal: bool) -> tuple:
    if not causal or t != s or t <= CAUSAL_BLOCK:
        return ((0, t, s),)
    n = -(-t // CAUSAL_BLOCK)
    size = -(-t // n)  # equal blocks
    return tuple((q0, min(q0 + size, t), min(q0 + size, t)) for q0 in range(0, t, size))


def _block_probs(q, k, mask):
    """q [B,K,G,c,D], k [B,K,s,D], mask [B|1,c,s] or None -> probabilities [B,K,G·c,s] fp32."""
    b, kh, g, c, d = q.shape
    logits = jnp.einsum("bkmd,bksd->bkms", q.reshape(b, kh, g * c, d), k, preferred_element_type=jnp.float32)
    if mask is not None:
        m = jnp.broadcast_to(mask[:, None, None], (mask.shape[0], 1, g) + mask.shape[1:])
        logits = jnp.where(m.reshape(mask.shape[0], 1, g * c, mask.shape[-1]), logits, _NEG)
    return jax.nn.softmax(logits, axis=-1)


def _blocked_forward(q, k, v, mask, blocks):
    b, kh, g, _, d = q.shape
    outs, probs = [], []
    for q0, q1, s1 in blocks:
        p = _block_probs(q[:, :, :, q0:q1], k[:, :, :s1], None if mask is None else mask[:, q0:q1, :s1])
        probs.append(p)
        o = jnp.einsum("bkms,bksd->bkmd", p.astype(v.dtype), v[:, :, :s1])
        outs.append(o.reshape(b, kh, g, q1 - q0, d))
    return jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0], probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blocked(q, k, v, mask, blocks):
    return _blocked_forward(q, k, v, mask, blocks)[0]


def _blocked_fwd(q, k, v, mask, blocks):
    o, probs = _blocked_forward(q, k, v, mask, blocks)
    return o, (q, k, v, mask, o, probs)


def _blocked_bwd(blocks, res, do):
    """dS = P ∘ (dP − rowsum(dO ∘ O)); dQ = dS K, dKᵀ = Qᵀ dS, dVᵀ = dOᵀ P (transposes only of [·, D])."""
    q, k, v, mask, o, probs = res
    b, kh, g, _, d = q.shape
    s = k.shape[2]
    delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)  # [B,K,G,T]
    dq = []
    dkt = jnp.zeros((b, kh, d, s), jnp.float32)  # dK, dV transposed: accumulated block by block in place
    dvt = jnp.zeros((b, kh, d, s), jnp.float32)
    for (q0, q1, s1), p in zip(blocks, probs):
        m = g * (q1 - q0)
        do_i = do[:, :, :, q0:q1].reshape(b, kh, m, d)
        dp = jnp.einsum("bkmd,bksd->bkms", do_i, v[:, :, :s1], preferred_element_type=jnp.float32)
        ds = (p * (dp - delta[:, :, :, q0:q1].reshape(b, kh, m, 1))).astype(q.dtype)
        dq.append(jnp.einsum("bkms,bksd->bkmd", ds, k[:, :, :s1]).reshape(b, kh, g, q1 - q0, d))
        q_i = q[:, :, :, q0:q1].reshape(b, kh, m, d)
        dkt = dkt.at[..., :s1].add(jnp.einsum("bkmd,bkms->bkds", q_i, ds, preferred_element_type=jnp.float32))
        dvt = dvt.at[..., :s1].add(jnp.einsum("bkmd,bkms->bkds", do_i, p.astype(do.dtype),
                                              preferred_element_type=jnp.float32))
    dq = jnp.concatenate(dq, axis=3) if len(dq) > 1 else dq[0]
    dmask = None if mask is None else jnp.zeros(mask.shape, jax.dtypes.float0)
    return dq, dkt.swapaxes(2, 3).astype(k.dtype), dvt.swapaxes(2, 3).astype(v.dtype), dmask


_blocked.defvjp(_blocked_fwd, _blocked_bwd)


class Attention(nnx.Module):
    ADAPTS = {"q": "wq", "k": "wk", "v": "wv", "o": "wo"}  # adapter lora_<x> updates weight ADAPTS[x]

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, *, rope_theta: float = 10000.0, impl: str = "einsum",
                 dtype=jnp.float32, lora_rank: int = 0, lora_alpha: float = 1.0,
                 lora_targets: tuple[str, ...] = ("q", "k", "v", "o"), rngs: nnx.Rngs):
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
        # Adapters add (alpha/r)·A·B to their weight; rank 0 creates none (the model is unchanged).
        if lora_rank:
            shapes = {"q": ((d_model,), (num_heads, head_dim), "embed"),
                      "k": ((d_model,), (num_kv_heads, head_dim), "embed"),
                      "v": ((d_model,), (num_kv_heads, head_dim), "embed"),
                      "o": ((num_heads, head_dim), (d_model,), None)}
            unknown = set(lora_targets) - set(shapes)
            if unknown:
                raise ValueError(f"unknown attention LoRA targets {sorted(unknown)}; choose from q, k, v, o")
            for t in lora_targets:
                i, o, n_in = shapes[t]
                setattr(self, f"lora_{t}", LoRA(i, o, lora_rank, lora_alpha, n_in,
                                                 "embed" if t == "o" else None, rngs=rngs))
        self.rope_theta = rope_theta
        resolve_impl(impl)  # fails early on an unknown name
        self.impl = impl
        self.dtype = dtype

    def weight(self, name: str) -> jax.Array:
        """Projection `name` (q, k, v, o) in compute dtype, its adapter's update added when it has one."""
        w = getattr(self, self.ADAPTS[name])[...]
        lora = getattr(self, f"lora_{name}", None)
        if lora is not None:
            w = w + lora.delta()
        return w.astype(self.dtype)

    def project_qkv(self, x: jax.Array, positions: jax.Array):
        """x [B,T,E], positions [B,T] or [T] -> q [B,T,H,D], k, v [B,T,K,D] (RoPE applied to q, k)."""
        x = x.astype(self.dtype)
        q = jnp.einsum("bte,ehd->bthd", x, self.weight("q"))
        k = jnp.einsum("bte,ehd->bthd", x, self.weight("k"))
        v = jnp.einsum("bte,ehd->bthd", x, self.weight("v"))
        return apply_rope(q, positions, self.rope_theta), apply_rope(k, positions, self.rope_theta), v

    def attend(self, q, k, v, mask, causal: bool = False, key_valid=None, key_lengths=None):
        return dot_product_attention(q, k, v, mask, self.impl, causal=causal, key_valid=key_valid,
                                     key_lengths=key_lengths)

    def project_out(self, o: jax.Array) -> jax.Array:
        return jnp.einsum("bthd,hde->bte", o, self.weight("o"))

    def __call__(self, x: jax.Array, mask: jax.Array | None = None,
                 positions: jax.Array | None = None, *, causal: bool = False, key_valid=None,
                 key_lengths=None, return_qk: bool = False):
        """Self-attention; `causal=True` promises that `mask` is causal, `key_valid` / `key_lengths`
        describe it (see `dot_product_attention`). `return_qk` also returns (q, k) after RoPE, for a
        loss on this layer's attention pattern (guided attention)."""
        if positions is None:
            positions = jnp.arange(x.shape[1])
        q, k, v = self.project_qkv(x, positions)
        out = self.project_out(self.attend(q, k, v, mask, causal, key_valid, key_lengths))
        return (out, (q, k)) if return_qk else out
