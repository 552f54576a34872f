"""SwiGLU feed-forward: W_o (silu(x W_gate) * x W_up).

On the XLA CPU backend the backward pass is written by hand: autodiff's weight gradients there fuse
the SiLU derivative into a transposed copy of each [tokens, mlp_dim] gradient (measured: the MLP's
training step at ~0.45 of the matmul peak, ~0.8 with the hand-written backward). Other backends use
autodiff.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from speech_jax.layers.lora import LoRA
from speech_jax.layers.params import dense


@jax.custom_vjp
def swiglu(x, w_gate, w_up, w_down):
    """x [..., E], w_gate/w_up [E, M], w_down [M, E] -> [..., E], all in x's dtype."""
    return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down


def _swiglu_fwd(x, w_gate, w_up, w_down):
    g, u = x @ w_gate, x @ w_up
    a = jax.nn.silu(g) * u
    return a @ w_down, (x, g, u, a, w_gate, w_up, w_down)


def _swiglu_bwd(res, dy):
    x, g, u, a, w_gate, w_up, w_down = res
    # Weight gradients contract every leading (token) axis. The XLA CPU dot wants its lhs transposed
    # (contraction minor), so the narrow [tokens, d_model] operand goes on the left: W_down's gradient
    # is computed transposed.
    lead = "abcdefgh"[:x.ndim - 1]
    wgrad = f"{lead}i,{lead}j->ij"
    sig = jax.nn.sigmoid(g)
    da = dy @ w_down.T
    dg = da * u * (sig * (1 + g * (1 - sig)))
    du = da * g * sig
    dx = dg @ w_gate.T + du @ w_up.T
    # The barrier keeps XLA from folding the transpose back into the dot (measured ~1.5x slower there).
    dw_down = jax.lax.optimization_barrier(jnp.einsum(wgrad, dy, a)).T
    return dx, jnp.einsum(wgrad, x, dg), jnp.einsum(wgrad, x, du), dw_down


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class SwiGLU(nnx.Module):
    ADAPTS = {"gate": "gate.kernel", "up": "up.kernel", "down": "down.kernel"}  # lora_<x> updates ADAPTS[x]

    def __init__(self, d_model: int, mlp_dim: int, *, dtype=jnp.float32, lora_rank: int = 0,
                 lora_alpha: float = 1.0, rngs: nnx.Rngs):
        self.gate = dense(rngs, d_model, mlp_dim, ("embed", "mlp"), dtype=dtype)
        self.up = dense(rngs, d_model, mlp_dim, ("embed", "mlp"), dtype=dtype)
        self.down = dense(rngs, mlp_dim, d_model, ("mlp", "embed"), dtype=dtype)
        if lora_rank:  # adapters add (alpha/r)·A·B to each kernel; rank 0 creates none
            for name, (d_in, d_out, names) in dict(gate=(d_model, mlp_dim, ("embed", "mlp")),
                                                   up=(d_model, mlp_dim, ("embed", "mlp")),
                                                   down=(mlp_dim, d_model, ("mlp", "embed"))).items():
                setattr(self, f"lora_{name}", LoRA((d_in,), (d_out,), lora_rank, lora_alpha, *names, rngs=rngs))
        self.dtype = dtype

    def weight(self, name: str) -> jax.Array:
        """Kernel `name` (gate, up, down) in compute dtype, its adapter's update added when it has one."""
        w = getattr(self, name).kernel[...]
        lora = getattr(self, f"lora_{name}", None)
        if lora is not None:
            w = w + lora.delta()
        return w.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        w_gate, w_up, w_down = (self.weight(n) for n in ("gate", "up", "down"))
        x = x.astype(self.dtype)
        if jax.default_backend() != "cpu":
            return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down
        return swiglu(x, w_gate, w_up, w_down)
