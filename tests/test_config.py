"""Config files and command-line overrides."""
import os

import pytest

from speech_jax.config import ConfigError, apply_overrides, load_config

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "tokenizer", "tiny.py")


def test_overrides_are_typed():
    c = apply_overrides(load_config(TINY), ["--config.train.steps=7", "--config.mesh.fsdp=2",
                                             "--config.optim.learning_rate=1", "--config.data.name=x/y",
                                             "--config.data.buckets_seconds=[1.0,2.0]"])
    assert c.train.steps == 7 and c.mesh.fsdp == 2
    assert isinstance(c.optim.learning_rate, float) and c.optim.learning_rate == 1.0
    assert c.data.name == "x/y" and c.data.buckets_seconds == (1.0, 2.0)


@pytest.mark.parametrize("bad,msg", [
    ("--config.train.stepz=3", "unknown config field"),
    ("--config.nope.steps=3", "unknown config section"),
    ("train.steps=3", "must look like"),
    ("--config.train.steps=abc", "bad value|type"),
])
def test_bad_overrides_are_clear_errors(bad, msg):
    with pytest.raises((ConfigError, TypeError), match=msg):
        apply_overrides(load_config(TINY), [bad])


def test_a_config_takes_only_the_context_it_declares():
    demo_fm = os.path.join(os.path.dirname(os.path.dirname(TINY)), "demo", "flow_matching.py")
    short, wide = (load_config(demo_fm, step_scale=s) for s in (1.0, 6.0))
    assert (short.model.d_model, short.model.num_layers, short.train.steps, short.optim.learning_rate,
            short.model.time_sampling) == (128, 2, 1200, 6e-3, "logit_normal")  # the 30-minute demo's DiT
    assert (wide.model.d_model, wide.model.num_layers, wide.train.steps, wide.optim.learning_rate,
            wide.model.time_sampling) == (128, 4, 1000, 1e-3, "uniform")  # the long recipe's (the demo scales steps)
    demo_vae = os.path.join(os.path.dirname(demo_fm), "flow_vae.py")
    latents = [load_config(demo_vae, step_scale=s).model.latent_dim for s in (1.0, 6.0)]
    assert latents == [64, 16]  # the paper's; the long recipe's
    for stage, short_schedule in (("tokenizer", (8, 2800)), ("ar", (8, 1800))):  # smaller batches, more steps
        configs = [load_config(os.path.join(os.path.dirname(demo_fm), f"{stage}.py"), step_scale=s) for s in (1.0, 6.0)]
        assert (configs[0].data.batch_size, configs[0].train.steps) == short_schedule
        assert configs[1].data.batch_size == 16  # the long recipe's, as measured
    assert load_config(TINY, step_scale=6.0).to_dict() == load_config(TINY).to_dict()  # no such argument


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TINY.replace("tiny.py", "nope.py"))


def test_compiler_options_are_parsed_and_a_malformed_one_is_a_clear_error():
    from speech_jax.train.program import compiler_options
    assert compiler_options("") is None
    assert compiler_options("xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True") == {
        "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    with pytest.raises(ValueError, match="name=value"):
        compiler_options("xla_backend_optimization_level")
