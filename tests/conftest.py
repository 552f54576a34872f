"""Shared fixtures. `tiny_corpus` builds the embedded espeak corpus once per test session."""

from __future__ import annotations

import os

# Eight host devices, so meshes with data, fsdp and tensor axes run on the CPU. Must precede importing jax.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """prepare("espeak_tts", config="tiny"): {"name", "data_dir", "corpus_dir", "bpe_model", ...}.

    A few seconds on 2 cores: 32 voices in 8 languages, 112 utterances, 16 kHz.
    """
    from data_pipelines.prepare import prepare

    return prepare("espeak_tts", str(tmp_path_factory.mktemp("data")), config="tiny")


@pytest.fixture(scope="session")
def tiny_stages(tiny_corpus, tmp_path_factory):
    """Every stage trained 2 steps on the tiny corpus, and the extracted tokens and latents:
    {"tokenizer", "flow_vae", "ar", "flow_matching": workdir, "extracted": extract()'s metadata}."""
    from data_pipelines.extract import extract
    from speech_jax.train.loop import train
    from stages import stage_config

    root = tmp_path_factory.mktemp("stages")
    out = {}
    for stage in ("tokenizer", "flow_vae"):
        out[stage] = str(root / stage)
        train(stage_config(stage, tiny_corpus, "--config.train.steps=2"), out[stage])
    out["extracted"] = extract(out["tokenizer"], flow_vae_workdir=out["flow_vae"], batch_size=8)
    out["ar"] = str(root / "ar")
    train(stage_config("ar", tiny_corpus, "--config.train.steps=2"), out["ar"])
    out["flow_matching"] = str(root / "flow_matching")
    train(stage_config("flow_matching", tiny_corpus, "--config.train.steps=2",
                       f"--config.pretrained.ar_workdir={out['ar']}",
                       f"--config.pretrained.flow_vae_workdir={out['flow_vae']}"), out["flow_matching"])
    return out
