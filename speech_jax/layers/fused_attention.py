"""Fused self-attention kernels whose masks are structural (causality, key validity), never dense arrays.

  splash  TPU: Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention). Causality is a
          lazy `CausalMask`; key validity is segment ids (a query sees keys of its own segment), so the
          kernel skips masked blocks. Elsewhere it runs in Pallas interpret mode (tests on CPU).
  cudnn   GPU: `jax.nn.dot_product_attention(implementation="cudnn")` with `is_causal` and, where the
          valid keys are a prefix, `key_value_seq_lengths`; an arbitrary key mask goes in as a mask.

Both compute the reference function on every valid query row. A padding query (key_valid False) sees
the padding keys instead of the valid ones: its output is unused, and no row is ever empty.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from speech_jax import sharding

BLOCK = 128  # splash's tile along both sequence axes: sequences are padded to a multiple of it


def _splash_kernel(groups: int, length: int, causal: bool, interpret: bool):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa
    one = sa.CausalMask((length, length)) if causal else sa.FullMask((length, length))
    mask = sa.MultiHeadMask([one] * groups)
    b = BLOCK
    sizes = sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b, block_kv_dkv=b,
                          block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    # One kv head with its `groups` query heads: the MQA kernel, mapped over batch and kv heads.
    return sa.make_splash_mqa_single_device(mask, block_sizes=sizes, interpret=interpret)


def _splash_local(q, k, v, seg, *, causal: bool, interpret: bool):
    """q [B,K,G,T,D] (scaled), k/v [B,K,T,D], seg [B,T] int32 -> [B,K,G,T,D]; T a multiple of BLOCK."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds
    kernel = _splash_kernel(q.shape[2], q.shape[3], causal, interpret)

    def one(q1, k1, v1, s1):
        return kernel(q1, k1, v1, SegmentIds(q=s1, kv=s1))

    per_head = jax.vmap(one, in_axes=(0, 0, 0, None))
    return jax.vmap(per_head, in_axes=(0, 0, 0, 0))(q, k, v, seg)


def splash(q, k, v, key_valid, *, causal: bool, platform: str):
    """q [B,T,H,D], k/v [B,T,K,D], key_valid [B,T] bool or None -> [B,T,H,D]."""
    b, t, h, d = q.shape
    kh = k.shape[2]
    pad = -t % BLOCK
    valid = jnp.ones((b, t), bool) if key_valid is None else key_valid.astype(bool)
    seg = jnp.pad(valid.astype(jnp.int32), ((0, 0), (0, pad)))  # padded positions: segment 0
    qg = (q * jnp.asarray(d ** -0.5, q.dtype)).reshape(b, t, kh, h // kh, d).transpose(0, 2, 3, 1, 4)
    kt, vt = k.transpose(0, 2, 1, 3), v.astype(q.dtype).transpose(0, 2, 1, 3)
    if pad:
        qg = jnp.pad(qg, ((0, 0),) * 3 + ((0, pad), (0, 0)))
        kt, vt = (jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0))) for x in (kt, vt))
    run = functools.partial(_splash_local, causal=causal, interpret=platform != "tpu")
    mesh = sharding.active_mesh()
    if mesh is not None and mesh.size > 1:
        # A Pallas call is opaque to the partitioner: each device runs its own slice of the batch.
        axes = tuple(a for a in sharding.BATCH_AXES if mesh.shape[a] > 1)
        lead = (axes if len(axes) > 1 else axes[0]) if axes else None
        head = "tensor" if mesh.shape["tensor"] > 1 and kh % mesh.shape["tensor"] == 0 else None
        spec_q, spec_kv = P(lead, head, None, None, None), P(lead, head, None, None)
        run = jax.shard_map(run, mesh=mesh, in_specs=(spec_q, spec_kv, spec_kv, P(lead, None)),
                            out_specs=spec_q, check_vma=False)
    o = run(qg, kt, vt, seg)[:, :, :, :t]
    return o.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


def cudnn(q, k, v, mask, key_lengths, *, causal: bool):
    """q [B,T,H,D], k/v [B,S,K,D]; `key_lengths` [B] (valid keys are a prefix) replaces `mask`."""
    if key_lengths is not None:
        return jax.nn.dot_product_attention(q, k, v.astype(q.dtype), is_causal=causal, implementation="cudnn",
                                            key_value_seq_lengths=key_lengths.astype(jnp.int32))
    m = None if mask is None else jnp.broadcast_to(mask[:, None], (mask.shape[0], 1) + mask.shape[1:])
    return jax.nn.dot_product_attention(q, k, v.astype(q.dtype), mask=m, is_causal=causal, implementation="cudnn")
