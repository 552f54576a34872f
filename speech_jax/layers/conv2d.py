"""2-D convolution over channel-last maps [B, H, W, C] (the discriminators' (time, period) and
(time, frequency) planes). Kernel [kh, kw, in, out] with logical names (None, None, conv_in, conv_out)."""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param

_DN = ("NHWC", "HWIO", "NHWC")


class Conv2d(nnx.Module):
    """padding: "same" (output ceil(H / stride_h) × ceil(W / stride_w), as PyTorch's k // 2 for odd
    kernels) or explicit ((top, bottom), (left, right))."""

    def __init__(self, d_in: int, d_out: int, kernel: Sequence[int], *, stride: Sequence[int] = (1, 1),
                 padding="same", use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        kh, kw = kernel
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = param(rngs, init, (kh, kw, d_in, d_out), (None, None, "conv_in", "conv_out"))
        self.bias = param(rngs, nnx.initializers.zeros_init(), (d_out,), ("conv_out",)) if use_bias else None
        self.padding = "SAME" if padding == "same" else tuple(tuple(p) for p in padding)
        self.stride, self.dtype = tuple(stride), dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.kernel[...].astype(self.dtype), self.stride, self.padding,
            dimension_numbers=_DN)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)
