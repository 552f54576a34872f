"""A style stage's adapters merged into its AR: the styled AR, in the base AR's structure and cost.

Synthesis with a style (`synthesize --style W`) loads the AR this way in place of the AR stage, so decoding,
export and every program see a plain AR transformer whose weights are the base's plus the style's
low-rank updates."""
from __future__ import annotations

import ml_collections
from flax import nnx

from speech_jax.layers import init_rngs
from speech_jax.layers.lora import merge_adapters


def styled_ar(style_workdir: str, step: int | None = None):
    """(the AR's config, the AR with the style merged in) from a style stage's workdir."""
    from speech_jax.audio.mel import MelSpec
    from speech_jax.models.ar_transformer import ARTransformer
    from speech_jax.train.restore import load_model
    config, model = load_model(style_workdir, "style", step)
    merged = merge_adapters(model.frozen)
    ar_config = ml_collections.ConfigDict(config.to_dict())
    ar_config.stage = "ar"
    ar_config.model.lora_rank = 0
    plain = nnx.eval_shape(lambda: ARTransformer(ar_config.model, MelSpec.from_config(ar_config.mel),
                                                 rngs=init_rngs(0)))
    nnx.update(plain, nnx.state(merged))
    return ar_config, plain
