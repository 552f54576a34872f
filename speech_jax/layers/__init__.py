"""Building blocks; every parameter carries logical axis names for sharding."""
from speech_jax.layers.attention import Attention, attention_mask, dot_product_attention
from speech_jax.layers.conv import Conv1d, ConvTranspose1d
from speech_jax.layers.mlp import SwiGLU
from speech_jax.layers.norms import RMSNorm
from speech_jax.layers.params import dense, init_rngs, param
from speech_jax.layers.rope import apply_rope
from speech_jax.layers.transformer import Block, Transformer

__all__ = ["Attention", "attention_mask", "dot_product_attention", "Conv1d", "ConvTranspose1d", "SwiGLU",
           "RMSNorm", "dense", "param", "apply_rope", "Block", "Transformer"]
