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
