"""Tiny trained stages for tests: every stage of the system, trained a couple of steps on `tiny_corpus`.

Shapes are as small as the models allow so that compiling dominates and stays short; the weights are
barely trained, which is all that tests of plumbing, export and resume need.
"""
from __future__ import annotations

import os

import numpy as np

from speech_jax.config import apply_overrides, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# data × fsdp × tensor over the tests' 8 host devices.
MESH_8 = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
# The trained fixtures run 2 steps; tests that build the same stage again use the same schedule length,
# so their programs are the same and come from the session's compilation cache (conftest.py).
STEPS = ["--config.train.steps=2"]

# XLA's cheapest CPU code generation, which the whole suite already compiles with (conftest.py's XLA_FLAGS);
# giving it to the stages' configs as well runs `train.compiler_options` through the loop end to end.
FAST_COMPILE = "xla_backend_optimization_level=0,xla_llvm_disable_expensive_passes=True"
COMMON = ["--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.peak_flops=1e11",
          "--config.train.async_checkpointing=False", "--config.optim.warmup_steps=1",
          f"--config.train.compiler_options={FAST_COMPILE}"]

OVERRIDES = {
    "tokenizer": ["--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
                  "--config.model.num_kv_heads=1", "--config.model.mlp_dim=64", "--config.model.codebook_size=32",
                  "--config.model.code_dim=4", "--config.data.batch_size=8"],
    "flow_vae": ["--config.model.channels=4", "--config.model.decoder_channels=32", "--config.model.latent_dim=8",
                 "--config.model.flow_hidden=16", "--config.model.flow_layers=2", "--config.model.mpd_channels=4",
                 "--config.model.stft_channels=4", "--config.model.mpd_periods=[2,3]",
                 "--config.model.stft_ffts=[256]", "--config.model.mel_scales=[[256,40]]",
                 "--config.data.max_seconds=0.5", "--config.data.min_seconds=0.3",
                 "--config.data.buckets_seconds=[0.5]"],
    "ar": ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.num_kv_heads=1",
           "--config.model.mlp_dim=64", "--config.model.num_layers=1", "--config.model.spk_d_model=16",
           "--config.model.spk_mlp_dim=32", "--config.model.spk_dim=16", "--config.data.max_text_len=48"],
    "flow_matching": ["--config.model.d_model=32", "--config.model.num_heads=2", "--config.model.num_kv_heads=1",
                      "--config.model.mlp_dim=64", "--config.model.num_layers=1",
                      "--config.model.eval_steps=2", "--config.data.max_seconds=2.0",
                      "--config.data.buckets_seconds=[2.0]"],
    "judge": ["--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
              "--config.model.num_kv_heads=1", "--config.model.mlp_dim=64"],
}


def stage_config(stage: str, corpus: dict, *extra: str, size: str = "tiny"):
    config = load_config(os.path.join(ROOT, "experiments", stage, f"{size}.py"))
    config.data.data_dir = corpus["data_dir"]
    config.data.bpe_model = corpus["bpe_model"]
    return apply_overrides(config, COMMON + OVERRIDES[stage] + list(extra))


def demo_arguments(corpus: dict, out: str, utterances: int = 2) -> dict:
    """`speech_jax.demo.Demo` keyword arguments for the tiny corpus, stages as `stage_config` makes them."""
    return dict(out=out, minutes=0, speed=1.0, data_dir=corpus["data_dir"], corpus="tiny", utterances=utterances,
                config_files={s: os.path.join(ROOT, "experiments", s, "tiny.py") for s in OVERRIDES},
                overrides={s: COMMON + OVERRIDES[s] + STEPS + MESH_8 for s in OVERRIDES})


def resolved_config(stage: str, corpus: dict, *extra: str):
    """`stage_config`, resolved without trained stages: AR and flow matching read no extracted features
    (codebook and latent sizes given; the text vocabulary is the corpus's BPE) and flow matching takes its
    frozen parts' settings from the tiny AR and Flow-VAE configs instead of their workdirs. For building
    programs, not for training."""
    from speech_jax.train.program import resolve_config
    features = ("--config.model.codebook_size=32",) if stage in ("ar", "flow_matching") else ()
    if stage == "flow_matching":
        ar, vae = resolved_config("ar", corpus, *extra), resolved_config("flow_vae", corpus, *extra)
        config = stage_config(stage, corpus, *features, f"--config.model.latent_dim={vae.model.latent_dim}", *extra)
        with config.unlocked():
            config.speaker, config.vae = ar.model, vae.model
        config.pretrained.ar_workdir = config.pretrained.flow_vae_workdir = ""
    else:
        config = stage_config(stage, corpus, *features, *extra)
    from speech_jax.text.units import from_config
    if "text_vocab_size" in config.model and not config.model.text_vocab_size:
        config.model.text_vocab_size = from_config(config.data).vocab_size
    resolve_config(config, corpus=False)
    return config


def voice(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voice-like test signal: a vibrato harmonic tone over a little noise, peak 0.5."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140.0 + 15.0 * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    x = x + 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)
