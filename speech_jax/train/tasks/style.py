"""A style adapter: LoRA on a trained AR's decoder projections, fitted to one style's utterances.

MiniMax-Speech controls emotion and style with low-rank adapters over its AR transformer, one adapter a
style, the base model shared. Here the trained AR stage (`pretrained.ar_workdir`) sits under `frozen` with
`model.lora_rank` adapters on every attention and MLP projection of its decoder; the adapters are the only
trainable parameters (speech_jax/train/state.py), so the base weights stay exactly as the AR stage left
them. The objective is the AR stage's own (zero-shot and one-shot layouts), on a corpus of the style
(`data.name`, extracted with the same tokenizer). An untrained adapter is the base model.
"""
from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from speech_jax.train.tasks import ar

# The AR stage's data settings and loss: the target's tokens, never its audio (data.target_audio).
TRAINS_ON_TARGET_AUDIO = ar.TRAINS_ON_TARGET_AUDIO


class StyleModel(nnx.Module):
    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        self.frozen = ar.build_model(config, rngs)  # the AR stage's model, adapters included


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> StyleModel:
    return StyleModel(config, rngs=rngs)


def loss_fn(model: StyleModel, batch: dict, rng: jax.Array, step: jax.Array):
    return ar.loss_fn(model.frozen, batch, rng, step)


def eval_fn(model: StyleModel, batch: dict) -> dict:
    return ar.eval_fn(model.frozen, batch)


tokens_in_batch = ar.tokens_in_batch
flops_per_step = ar.flops_per_step


def resolve_config(config) -> None:
    """The AR stage's model (adapters added), mel and data settings, the style config's data on top."""
    from speech_jax.train.restore import data_on_top, read_ar_stage
    base = read_ar_stage(config.pretrained.ar_workdir, "a style stage")
    rank, alpha = int(config.lora.rank), float(config.lora.alpha)
    if rank <= 0:
        raise ValueError(f"lora.rank must be positive, got {rank}")
    model = ml_collections.ConfigDict(base.model.to_dict())
    model.lora_rank, model.lora_alpha = rank, alpha
    with config.unlocked():
        config.model, config.mel, config.data = model, base.mel, data_on_top(base.data, config.data)


def load_pretrained(state, config):
    """The AR stage's weights into `frozen` (every leaf but the adapters, which start at zero update)."""
    from speech_jax.train.restore import with_frozen_stage
    return with_frozen_stage(state, config.pretrained.ar_workdir, "ar")
