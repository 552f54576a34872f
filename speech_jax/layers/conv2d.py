"""2-D convolution over channel-last maps [B, H, W, C] (the discriminators' (time, period) and
(time, frequency) planes). Kernel [kh, kw, in, out] with logical names (None, None, conv_in, conv_out).

Strided convolutions are computed in polyphase form: the padded input is folded space-to-depth
([H, W, C] -> [H/sh, W/sw, sh·sw·C]) and convolved at stride 1 with the kernel reorganised to match
(taps past the kernel are zero). The result is the strided convolution exactly; what changes is its
gradient, which becomes stride-1 convolutions instead of the input-dilated ones XLA:CPU runs slowly
(several times the whole forward). The fold is a free reshape when the strided axis is the last
spatial one, or when the other spatial axis has size 1.

Kernels wide in both axes (the STFT discriminator's 3×9) are computed with their kh rows folded into
channels (the input's kh shifted copies side by side) and a convolution along W alone: XLA:CPU's
fast convolution path takes those, and not the 2-D form of the same product (about 1.5× faster
forward and backward at the discriminators' widths).
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


def _rows_folded(x: jax.Array, kernel: jax.Array, stride: Sequence[int], padding) -> jax.Array:
    """A conv with kh > 1 and stride_h = 1 as a conv over W of the input with its kh row shifts stacked
    along channels: [B, H, W, C] -> [B·H_out, 1, W, kh·C], kernel -> [1, kw, kh·C, O]."""
    kh, kw, c, o = kernel.shape
    (top, bottom), horizontal = padding
    b, h = x.shape[:2]
    rows = h + top + bottom - kh + 1
    x = jnp.pad(x, ((0, 0), (top, bottom), (0, 0), (0, 0)))
    x = jnp.concatenate([x[:, i:i + rows] for i in range(kh)], axis=-1)
    x = x.reshape(b * rows, 1, x.shape[2], kh * c)
    kernel = kernel.transpose(1, 0, 2, 3).reshape(1, kw, kh * c, o)
    if stride[1] == 1:
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((0, 0), horizontal), dimension_numbers=_DN)
    else:
        y = polyphase_conv(x, kernel, (1, stride[1]), ((0, 0), horizontal))
    return y.reshape(b, rows, y.shape[2], o)


def polyphase_conv(x: jax.Array, kernel: jax.Array, stride: Sequence[int], padding) -> jax.Array:
    """conv_general_dilated(x, kernel, stride, padding) for explicit ((top, bottom), (left, right)) padding,
    computed as a stride-1 convolution over the space-to-depth folded input."""
    kh, kw = kernel.shape[:2]
    sh, sw = stride
    pads, sizes = [], []
    for size, k, s, (lo, hi) in zip(x.shape[1:3], (kh, kw), (sh, sw), padding):
        out = (size + lo + hi - k) // s + 1
        length = s * (out + -(-k // s) - 1)  # what the folded stride-1 conv reads
        pads.append((lo, max(length - size - lo, 0)))
        sizes.append(length)
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))[:, :sizes[0], :sizes[1]]
    return jax.lax.conv_general_dilated(space_to_depth(x, stride), space_to_depth_kernel(kernel, stride),
                                        (1, 1), "VALID", dimension_numbers=_DN)


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
        if min(kernel.shape[:2]) > 1 and self.stride[0] == 1:
            y = _rows_folded(x, kernel, self.stride, padding)
        elif self.stride == (1, 1):
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DN)
        else:
            y = polyphase_conv(x, kernel, self.stride, padding)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)
