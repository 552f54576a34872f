"""2-D convolution over channel-last maps [B, H, W, C] (the discriminators' (time, period) and
(time, frequency) planes). Kernel [kh, kw, in, out] with logical names (None, None, conv_in, conv_out).

Strided convolutions with a 2-D kernel (the STFT discriminator's 3×9, stride 2 in frequency) are
computed in polyphase form: the padded input is folded space-to-depth ([H, W, C] -> [H/sh, W/sw,
sh·sw·C]) and convolved at stride 1 with the kernel reorganised to match (taps past the kernel are
zero). The result is the strided convolution exactly; what changes is its gradient, which becomes
stride-1 convolutions instead of input-dilated 2-D ones, which XLA:CPU runs several times slower than
the forward (measured 1.1-1.6× faster forward + backward at 4-16 channels). Kernels (k, 1) over maps
of width 1 (the period discriminator's) take XLA:CPU's 1-D path, whose gradients are fast: they stay
direct.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param

_DN = ("NHWC", "HWIO", "NHWC")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """XLA's "SAME": output ceil(size / stride), the smaller half of the padding on the left."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def space_to_depth_kernel(kernel: jax.Array, stride: Sequence[int]) -> jax.Array:
    """[kh, kw, C, O] -> [ceil(kh/sh), ceil(kw/sw), sh·sw·C, O]: tap (j·sh + r, l·sw + q) of the kernel
    becomes tap (j, l), input channel (r, q, c) of the folded kernel."""
    (kh, kw, c, o), (sh, sw) = kernel.shape, stride
    th, tw = -(-kh // sh), -(-kw // sw)
    k = jnp.pad(kernel, ((0, th * sh - kh), (0, tw * sw - kw), (0, 0), (0, 0)))
    k = k.reshape(th, sh, tw, sw, c, o).transpose(0, 2, 1, 3, 4, 5)
    return k.reshape(th, tw, sh * sw * c, o)


def space_to_depth(x: jax.Array, stride: Sequence[int]) -> jax.Array:
    """[B, H, W, C] (H, W multiples of the strides) -> [B, H/sh, W/sw, sh·sw·C], channels ordered (r, q, c)."""
    (b, h, w, c), (sh, sw) = x.shape, stride
    x = x.reshape(b, h // sh, sh, w // sw, sw, c)
    if sh > 1 and w // sw > 1:
        x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // sh, w // sw, sh * sw * c)


def polyphase_conv(x: jax.Array, kernel: jax.Array, stride: Sequence[int], padding) -> jax.Array:
    """conv_general_dilated(x, kernel, stride, padding) for explicit ((top, bottom), (left, right)) padding,
    computed as a stride-1 convolution over the space-to-depth folded input. Only strided axes are padded
    here (a copy); the convolution pads the others itself."""
    pads, crops, conv_pads = [], [], []
    for size, k, s, (lo, hi) in zip(x.shape[1:3], kernel.shape[:2], stride, padding):
        if s == 1:
            pads.append((0, 0))
            crops.append(size)
            conv_pads.append((lo, hi))
            continue
        out = (size + lo + hi - k) // s + 1
        length = s * (out + -(-k // s) - 1)  # what the folded stride-1 conv reads
        pads.append((lo, max(length - size - lo, 0)))
        crops.append(length)
        conv_pads.append((0, 0))
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))[:, :crops[0], :crops[1]]
    return jax.lax.conv_general_dilated(space_to_depth(x, stride), space_to_depth_kernel(kernel, stride),
                                        (1, 1), conv_pads, dimension_numbers=_DN)


class Conv2d(nnx.Module):
    """padding: "same" (XLA's SAME: output ceil(H / stride_h) × ceil(W / stride_w); PyTorch's k // 2 for
    odd kernels at stride 1) or explicit ((top, bottom), (left, right))."""

    def __init__(self, d_in: int, d_out: int, kernel: Sequence[int], *, stride: Sequence[int] = (1, 1),
                 padding="same", use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        kh, kw = kernel
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)
        self.kernel = param(rngs, init, (kh, kw, d_in, d_out), (None, None, "conv_in", "conv_out"))
        self.bias = param(rngs, nnx.initializers.zeros_init(), (d_out,), ("conv_out",)) if use_bias else None
        self.padding = "same" if padding == "same" else tuple(tuple(p) for p in padding)
        self.stride, self.dtype = tuple(stride), dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x, kernel = x.astype(self.dtype), self.kernel[...].astype(self.dtype)
        padding = self.padding
        if padding == "same":
            padding = tuple(same_padding(n, k, s) for n, k, s in zip(x.shape[1:3], kernel.shape[:2], self.stride))
        if self.stride != (1, 1) and min(kernel.shape[:2]) > 1:
            y = polyphase_conv(x, kernel, self.stride, padding)
        else:
            y = jax.lax.conv_general_dilated(x, kernel, self.stride, padding, dimension_numbers=_DN)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)
