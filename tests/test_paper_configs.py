"""The paper-scale configs (experiments/<stage>/paper.py) resolve without a corpus and build abstractly at
their intended sizes; their full TPU compiles are experiments/compile_all.sh, not part of the suite."""
import math

import jax
import pytest
from flax import nnx

from speech_jax.config import load_config
from speech_jax.train.program import build_program, resolve_config
from stages import ROOT

PODS = (64, 256)  # v5p-64 and v5e-256 chips: the global batch splits evenly over either


def _paper(stage):
    config = load_config(f"{ROOT}/experiments/{stage}/paper.py")
    resolve_config(config, corpus=False)  # every size is given: no corpus, no trained stage
    return config


def _count(tree) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("stage,low,high", [("tokenizer", 80e6, 200e6), ("ar", 0.35e9, 0.6e9)])
def test_transformer_stages_build_at_paper_size(stage, low, high):
    config = _paper(stage)
    program = build_program(config, jax.devices()[:1])  # shapes only: nothing is allocated
    assert low < _count(program.abstract_state.params) < high
    m = config.model
    assert (m.dtype, m.scan_layers, m.attention_impl) == ("bfloat16", True, "auto") and m.remat != "none"
    assert config.data.max_seconds == 30.0 and all(config.data.batch_size % n == 0 for n in PODS)


def test_flow_matching_dit_is_about_0_3b():
    from speech_jax.models.flow_matching import FlowMatchingDiT
    config = _paper("flow_matching")
    params = jax.eval_shape(lambda: nnx.state(FlowMatchingDiT(config.model, rngs=nnx.Rngs(0)), nnx.Param))
    assert 0.25e9 < _count(params) < 0.4e9
    assert config.speaker.d_model == _paper("ar").model.d_model  # the AR paper config's speaker encoder
    assert config.data.max_seconds == 30.0 and all(config.data.batch_size % n == 0 for n in PODS)


def test_flow_vae_is_dac_shaped_at_24_khz():
    config = _paper("flow_vae")
    m = config.model
    assert math.prod(m.strides) == config.mel.hop_length == 480 and config.data.sample_rate == 24000
    assert (m.channels, m.decoder_channels, m.dtype) == (64, 1536, "bfloat16")
    assert all(config.data.batch_size % n == 0 for n in PODS)
