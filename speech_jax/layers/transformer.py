"""Pre-norm transformer: x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); a stack ends in RMSNorm.

Options for large models, all off by default:
  scan_layers  the blocks are built with `nnx.vmap` (params stacked on a leading "layers" axis) and run
               with `lax.scan`, so compile time does not grow with depth;
  remat        "full" recomputes each block in the backward pass, "dots" keeps only its matmul outputs;
  dropout      residual dropout (GPT-2's, CosyVoice's LM's 0.1): each block's attention and MLP outputs are
               dropped at this rate before they join the residual stream, when the call is given a
               `dropout_rng` (training); without one (evaluation, decoding) nothing is dropped.
`extend` runs new tokens against a KV cache (prefill and one-token decode steps).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.attention import Attention, attention_mask
from speech_jax.layers.mlp import SwiGLU
from speech_jax.layers.norms import RMSNorm
from speech_jax.sharding import constrain

ACT = ("batch", "length", "embed")

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nnx.Module):
    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, mlp_dim: int, *,
                 rope_theta: float = 10000.0, impl: str = "einsum", dtype=jnp.float32, lora_rank: int = 0,
                 lora_alpha: float = 1.0, dropout: float = 0.0, rngs: nnx.Rngs):
        lora = dict(lora_rank=lora_rank, lora_alpha=lora_alpha)
        self.dropout = float(dropout)
        self.attn_norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)
        self.attn = Attention(d_model, num_heads, num_kv_heads, rope_theta=rope_theta, impl=impl,
                              dtype=dtype, **lora, rngs=rngs)
        self.mlp_norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)
        self.mlp = SwiGLU(d_model, mlp_dim, dtype=dtype, **lora, rngs=rngs)

    def __call__(self, x, mask=None, positions=None, causal: bool = False, key_valid=None, probe: bool = False,
                 dropout_rng=None):
        """-> x, or (x, (q, k)) of this block's attention when `probe`. `dropout_rng` (a key) drops the
        residual branches at the block's rate."""
        x = constrain(x, ACT)
        keys = (None, None) if dropout_rng is None else jax.random.split(dropout_rng)
        a = self.attn(self.attn_norm(x), mask, positions, causal=causal, key_valid=key_valid, return_qk=probe)
        a, qk = a if probe else (a, None)
        x = x + self._drop(a, keys[0])
        x = x + self._drop(self.mlp(self.mlp_norm(x)), keys[1])
        x = constrain(x, ACT)
        return (x, qk) if probe else x

    def _drop(self, y, key):
        if key is None or not self.dropout:
            return y
        keep = jax.random.bernoulli(key, 1.0 - self.dropout, y.shape)
        return jnp.where(keep, y / (1.0 - self.dropout), 0).astype(y.dtype)

    def extend(self, x, positions, k_cache, v_cache, mask, start):
        """New tokens x [B,T,E] at cache slots start..start+T-1: writes their k, v into the caches
        [B,M,K,D] and attends over the whole cache under `mask` [B|1,T,M]. -> (x, k_cache, v_cache)."""
        x = constrain(x, ACT)
        q, k, v = self.attn.project_qkv(self.attn_norm(x), positions)
        at = (0, start, 0, 0)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), at)
        v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), at)
        o = self.attn.attend(q, k_cache.astype(q.dtype), v_cache.astype(q.dtype), mask)
        x = x + self.attn.project_out(o)
        x = x + self.mlp(self.mlp_norm(x))
        return constrain(x, ACT), k_cache, v_cache


def _run_block(graphdef, causal, probe, state, x, mask, positions, key_valid, dropout_rng=None):
    return nnx.merge(graphdef, state)(x, mask, positions, causal, key_valid, probe, dropout_rng)


class Transformer(nnx.Module):
    def __init__(self, num_layers: int, d_model: int, num_heads: int, num_kv_heads: int | None,
                 mlp_dim: int, *, rope_theta: float = 10000.0, impl: str = "einsum", dtype=jnp.float32,
                 scan_layers: bool = False, remat: str = "none", lora_rank: int = 0, lora_alpha: float = 1.0,
                 dropout: float = 0.0, rngs: nnx.Rngs):
        if remat not in REMAT_POLICIES:
            raise ValueError(f"unknown remat {remat!r}; use one of {sorted(REMAT_POLICIES)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        num_kv_heads = num_kv_heads or num_heads

        def make(r):
            return Block(d_model, num_heads, num_kv_heads, mlp_dim, rope_theta=rope_theta, impl=impl,
                         dtype=dtype, lora_rank=lora_rank, lora_alpha=lora_alpha, dropout=dropout, rngs=r)

        if scan_layers:
            make_stack = nnx.vmap(make, in_axes=0, out_axes=0,
                                  transform_metadata={nnx.PARTITION_NAME: "layers"})
            self.blocks = nnx.split_rngs(splits=num_layers)(make_stack)(rngs)
        else:
            self.blocks = nnx.List([make(rngs) for _ in range(num_layers)])
        self.norm = RMSNorm(d_model, dtype=dtype, rngs=rngs)
        self.num_layers, self.num_kv_heads, self.head_dim = num_layers, num_kv_heads, d_model // num_heads
        self.scan_layers, self.remat = scan_layers, remat

    def __call__(self, x: jax.Array, key_mask: jax.Array | None = None, *, causal: bool = False,
                 positions: jax.Array | None = None, mask: jax.Array | None = None,
                 key_valid: jax.Array | None = None, probe: int | None = None, dropout_rng: jax.Array | None = None):
        """x [B,T,E]; key_mask [B,T] True on valid frames (padded keys are never attended).

        `mask` [B|1,T,T], when given, is used as is instead of key_mask; with causal=True it must itself
        be causal (hide every later key), which lets the attention skip the masked upper triangle.
        `key_valid` [B,T] alongside it says the mask is exactly the valid keys (and causality) on valid
        rows, so that fused kernels need no dense mask; key_mask alone says so by itself.
        `probe` (a layer index) returns (output, (q, k)) with that layer's queries and keys after RoPE.
        `dropout_rng` (training) turns the blocks' residual dropout on; layer i draws from its i-th split."""
        if probe is not None and not 0 <= probe < self.num_layers:
            raise ValueError(f"probe layer {probe} is not one of the {self.num_layers} layers")
        if mask is None:
            mask = attention_mask(key_mask, x.shape[1], x.shape[1], causal=causal)
            key_valid = key_mask
        run = _run_block
        if self.remat != "none":
            run = jax.checkpoint(_run_block, static_argnums=(0, 1, 2), policy=REMAT_POLICIES[self.remat])
        keys = None if dropout_rng is None else jax.random.split(dropout_rng, self.num_layers)
        qk = None
        if self.scan_layers:
            graphdef, state = nnx.split(self.blocks)

            def layers(h, lo, hi):  # layers [lo, hi) as one scan
                if hi <= lo:
                    return h
                part = state if hi - lo == self.num_layers else jax.tree.map(lambda a: a[lo:hi], state)
                part_keys = None if keys is None else keys[lo:hi]
                return jax.lax.scan(lambda h, sk: (run(graphdef, causal, False, sk[0], h, mask, positions,
                                                       key_valid, sk[1]), None), h, (part, part_keys))[0]

            if probe is None:
                x = layers(x, 0, self.num_layers)
            else:
                x = layers(x, 0, probe)
                x, qk = run(graphdef, causal, True, jax.tree.map(lambda a: a[probe], state), x, mask, positions,
                            key_valid, None if keys is None else keys[probe])
                x = layers(x, probe + 1, self.num_layers)
        else:
            for i, block in enumerate(self.blocks):
                key = None if keys is None else keys[i]
                if self.remat == "none":
                    y = block(x, mask, positions, causal, key_valid, i == probe, key)
                else:
                    graphdef, state = nnx.split(block)
                    y = run(graphdef, causal, i == probe, state, x, mask, positions, key_valid, key)
                x, qk = y if i == probe else (y, qk)
        out = self.norm(x)
        return out if probe is None else (out, qk)

    # --- KV cache -------------------------------------------------------------------------------

    def init_cache(self, batch: int, max_len: int, dtype=jnp.float32) -> dict:
        """{"k", "v"}: per layer [B, max_len, K, D] zeros; a tuple over layers, or stacked [L, B, ...]
        when the layers are scanned."""
        shape = (batch, max_len, self.num_kv_heads, self.head_dim)
        if self.scan_layers:
            return {"k": jnp.zeros((self.num_layers,) + shape, dtype),
                    "v": jnp.zeros((self.num_layers,) + shape, dtype)}
        return {"k": tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers)),
                "v": tuple(jnp.zeros(shape, dtype) for _ in range(self.num_layers))}

    def extend(self, x: jax.Array, positions: jax.Array, cache: dict, mask: jax.Array,
               start: jax.Array | int) -> tuple[jax.Array, dict]:
        """Runs x [B,T,E] as cache slots start..start+T-1 (prefill: start 0; decode: T = 1).

        positions [B,T] are the RoPE positions; mask [B|1,T,M] says which cache slots each new token
        sees (build it with `attention_mask(..., q_offset=start)`). -> (normed output, new cache)."""
        start = jnp.asarray(start, jnp.int32)
        if self.scan_layers:
            graphdef, state = nnx.split(self.blocks)

            def body(h, layer):
                s, k, v = layer
                h, k, v = nnx.merge(graphdef, s).extend(h, positions, k, v, mask, start)
                return h, (k, v)

            x, (ks, vs) = jax.lax.scan(body, x, (state, cache["k"], cache["v"]))
        else:
            ks, vs = [], []
            for block, k, v in zip(self.blocks, cache["k"], cache["v"]):
                x, k, v = block.extend(x, positions, k, v, mask, start)
                ks.append(k)
                vs.append(v)
            ks, vs = tuple(ks), tuple(vs)
        return self.norm(x), {"k": ks, "v": vs}
