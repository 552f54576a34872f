"""FSDP for every parameter: on an 8-device mesh with fsdp=8, each stage's parameters and optimizer state
take about 1/8 of their bytes per device, and the report states the shardings the arrays really have."""
import logging

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from speech_jax import sharding
from speech_jax.sharding_report import sharding_report, totals
from speech_jax.train.program import build_program
from stages import resolved_config

FSDP_8 = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"]
# The tests' models are tiny: a low threshold so that nearly every tensor is in play.
MIN_BYTES = 1024
# The tiny Flow-VAE's optimizer state is one flat vector (a CPU compile-time saving) that stays replicated;
# accelerator configs keep it per array, as here.
EXTRA = {"flow_vae": ["--config.optim.flat_state=False"]}


@pytest.mark.parametrize("stage", ["tokenizer", "flow_vae", "ar", "flow_matching"])
def test_parameters_and_optimizer_state_split_eight_ways(stage, tiny_corpus, caplog):
    config = resolved_config(stage, tiny_corpus, *FSDP_8, f"--config.sharding.fsdp_min_bytes={MIN_BYTES}",
                             *EXTRA.get(stage, []))
    with caplog.at_level(logging.INFO):
        program = build_program(config)
    rows = sharding_report(program.abstract_state, program.state_shardings, MIN_BYTES)
    trained = [r for r in rows if r.part in ("params", "opt_state")]
    total = sum(r.bytes for r in trained)
    per_device = sum(r.bytes_per_device for r in trained)
    replicated = sum(r.bytes for r in trained if r.bytes_per_device == r.bytes)
    # Exactly an eighth of the sharded bytes, plus the replicated ones, which are a small share.
    assert per_device == (total - replicated) / 8 + replicated
    assert replicated < 0.1 * total, (stage, replicated, total)
    assert per_device < 0.125 * total + replicated
    # Every tensor at least the threshold is sharded over fsdp, or its fallback was logged.
    logged = caplog.text
    for r in rows:
        if r.bytes >= MIN_BYTES and "fsdp" not in str(r.spec):
            assert r.flagged and str(r.shape) in logged, r
    # Optimizer moments shard like their parameters.
    params = [r for r in rows if r.part == "params"]
    moments = [r for r in rows if r.part == "opt_state" and r.names is not None]
    assert len(moments) == 2 * len(params)  # Adam's mu and nu
    for r in moments:
        tail = r.path.split("/mu/" if "/mu/" in r.path else "/nu/", 1)[1]
        same = [p for p in params if p.path.endswith("/" + tail) and p.shape == r.shape]
        assert same and all(p.spec == r.spec for p in same), r.path


def test_report_matches_the_arrays_of_an_initialised_state(tiny_corpus):
    # The tokenizer: transformer blocks, convolutions, a VQ codebook (non-trained state) and a CTC head.
    config = resolved_config("tokenizer", tiny_corpus, *FSDP_8, f"--config.sharding.fsdp_min_bytes={MIN_BYTES}")
    program = build_program(config)
    planned = sharding_report(program.abstract_state, program.state_shardings, MIN_BYTES)
    with sharding.activation_rules(program.mesh, program.rules):
        state = program.init(program.rng)
    actual = sharding_report(state, min_bytes=MIN_BYTES)
    assert [r.path for r in planned] == [r.path for r in actual]
    leaves = jax.tree.leaves(state)
    assert len(leaves) == len(actual)
    for p, a, leaf in zip(planned, actual, leaves):
        assert p.spec == a.spec == leaf.sharding.spec, p.path
        assert a.bytes_per_device == leaf.addressable_shards[0].data.nbytes, p.path
    assert any("fsdp" in str(r.spec) and r.names and "conv_in" in r.names for r in actual)  # convs too


class Mesh8:
    shape = {"data": 1, "fsdp": 8, "tensor": 2}


@pytest.mark.parametrize("names,shape,want", [
    # The rules' fsdp dimension (embed, 257) is not divisible: the next largest divisible dimension takes it.
    (("embed", None), (257, 24), P(None, "fsdp")),
    # Convolutions: the rules give conv_in no axis; fsdp goes on the largest divisible dimension.
    ((None, "conv_in", "conv_out"), (7, 64, 32), P(None, "fsdp", "tensor")),
    # Only a tensor-parallel dimension divides: fsdp joins it there.
    ((None, "conv_out"), (5, 48), P(None, ("tensor", "fsdp"))),
    # Nothing divides: replicated (and logged).
    (("embed", None), (257, 3), P(None, None)),
])
def test_fallback_dimension(names, shape, want):
    spec = sharding.logical_to_spec(names, sharding.DEFAULT_RULES, Mesh8, shape)
    got, why = sharding.fsdp_spec(spec, shape, Mesh8, nbytes=10**9, min_bytes=0)
    assert got == want
    assert why is not None


def test_small_tensors_stay_replicated_and_fallbacks_are_logged_once(caplog):
    mesh = sharding.make_mesh(ml_mesh(fsdp=8))

    class Model(nnx.Module):
        def __init__(self, rngs):
            init = nnx.initializers.normal()
            self.odd = nnx.Param(nnx.with_partitioning(init, ("embed", None))(rngs.params(), (257, 3)))
            self.small = nnx.Param(nnx.with_partitioning(init, ("norm",))(rngs.params(), (8,)))
            self.conv = nnx.Param(nnx.with_partitioning(init, (None, "conv_in", "conv_out"))(rngs.params(), (3, 16, 8)))

    state = nnx.state(Model(nnx.Rngs(0)))
    tree = {"params": state, "mu": jax.tree.map(lambda x: x, state)}  # an optimizer moment's copy
    with caplog.at_level(logging.INFO):
        out = sharding.state_shardings(tree, sharding.DEFAULT_RULES, mesh, fsdp_min_bytes=64)
    assert out["params"]["odd"].get_value().spec == P(None, None)
    assert out["params"]["small"].get_value().spec == P(None)          # 32 bytes: under the threshold
    assert out["params"]["conv"].get_value().spec == P(None, "fsdp", None)
    assert out["mu"]["conv"].get_value().spec == P(None, "fsdp", None)
    lines = [r for r in caplog.records if "odd" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and "(257, 3)" in lines[0].getMessage()
    rows = sharding_report(tree, out, min_bytes=64)
    assert [r.path for r in rows if r.flagged] == ["mu/odd", "params/odd"]
    assert totals(rows)["params"]["bytes_per_device"] == 257 * 3 * 4 + 8 * 4 + 3 * 16 * 8 * 4 // 8


def ml_mesh(**kw):
    import ml_collections
    return ml_collections.ConfigDict(dict(data=1, fsdp=kw.get("fsdp", 1), tensor=1, num_devices=0))
