"""1-D convolutions over channel-last sequences [B, T, C]: plain, strided (downsampling) and
transposed (upsampling). Kernels are [width, in, out] with logical names (None, conv_in, conv_out)."""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.params import param

_DN = ("NWC", "WIO", "NWC")


def _same_padding(kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    # Output length T // stride (T a multiple of stride); extra padding goes to the right.
    total = dilation * (kernel_size - 1) + 1 - stride
    return total // 2, total - total // 2


class Conv1d(nnx.Module):
    """padding: "same" (output T // stride), "causal" (all padding on the left) or (left, right)."""

    def __init__(self, d_in: int, d_out: int, kernel_size: int, *, stride: int = 1, dilation: int = 1,
                 padding="same", use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        self.kernel = param(rngs, init, (kernel_size, d_in, d_out), (None, "conv_in", "conv_out"))
        self.bias = param(rngs, nnx.initializers.zeros_init(), (d_out,), ("conv_out",)) if use_bias else None
        if padding == "same":
            padding = _same_padding(kernel_size, stride, dilation)
        elif padding == "causal":
            padding = (dilation * (kernel_size - 1) + 1 - stride, 0)
        self.padding = tuple(padding)
        self.stride, self.dilation, self.dtype = stride, dilation, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), self.kernel[...].astype(self.dtype), (self.stride,), [self.padding],
            rhs_dilation=(self.dilation,), dimension_numbers=_DN)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class ConvTranspose1d(nnx.Module):
    """Output length (T - 1)·stride − 2·padding + kernel, as PyTorch's ConvTranspose1d(k, s, p);
    the default padding (k − s) / 2 gives exactly T · stride."""

    def __init__(self, d_in: int, d_out: int, kernel_size: int, *, stride: int, padding: int | None = None,
                 use_bias: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
        if padding is None:
            if (kernel_size - stride) % 2:
                raise ValueError("kernel_size - stride must be even for an exact x stride upsampling")
            padding = (kernel_size - stride) // 2
        init = nnx.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
        self.kernel = param(rngs, init, (kernel_size, d_in, d_out), (None, "conv_in", "conv_out"))
        self.bias = param(rngs, nnx.initializers.zeros_init(), (d_out,), ("conv_out",)) if use_bias else None
        self.kernel_size, self.stride, self.padding, self.dtype = kernel_size, stride, padding, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        # A transposed conv is a stride-1 conv over the input dilated by `stride`, with the kernel flipped.
        pad = self.kernel_size - 1 - self.padding
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype), jnp.flip(self.kernel[...], 0).astype(self.dtype), (1,), [(pad, pad)],
            lhs_dilation=(self.stride,), dimension_numbers=_DN)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)
