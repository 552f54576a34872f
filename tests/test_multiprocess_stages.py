"""The AR and flow matching each train in a 2-process job (2 × 4 CPU devices) like the demo's
tiny stages trained in one process on 8 (test_multiprocess.py does the tokenizer, preemption and resume). A
file of its own, so that the test workers share the multi-process jobs."""
import os
import sys

import numpy as np
import pytest

from speech_jax.local_job import Job
from speech_jax.train.metrics import read_metrics

pytestmark = pytest.mark.slow


def stage_argv(stage, corpus, stages, workdir):
    """The demo's tiny stage as `tiny_stages` trained it in one process on 8 devices (2 × 2 × 2 mesh), for a
    job whose processes hold 4 devices each."""
    from stages import COMMON, MESH_8, OVERRIDES, ROOT, STEPS
    pretrained = ([f"--config.pretrained.ar_workdir={stages['ar']}",
                   f"--config.pretrained.flow_vae_workdir={stages['flow_vae']}"] if stage == "flow_matching" else [])
    return [sys.executable, "-m", "speech_jax.cli", "train", "--config",
            os.path.join(ROOT, "experiments", stage, "tiny.py"), "--workdir", workdir,
            f"--config.data.name={corpus['name']}", f"--config.data.data_dir={corpus['data_dir']}",
            f"--config.data.bpe_model={corpus['bpe_model']}", *COMMON, *OVERRIDES[stage], *STEPS, *MESH_8,
            *pretrained]


# The Flow-VAE is left out: its data path is the tokenizer's (test_multiprocess.py) and its sharded two-optimizer
# state is test_stage_training's 1-vs-8 test; two processes compiling its GAN cost ~2 CPU-minutes of the suite.
@pytest.mark.parametrize("stage", ["ar", "flow_matching"])
def test_two_processes_train_each_stage_like_one(stage, tiny_corpus, tiny_stages, tmp_path):
    """The AR's references, prompts and extracted tokens, and flow matching's latents and frozen AR and
    Flow-VAE weights (restored onto the mesh on both hosts) give the one-process run's losses and gradients."""
    workdir = str(tmp_path / "run")
    job = Job(stage_argv(stage, tiny_corpus, tiny_stages, workdir), num_processes=2, devices=4,
              logdir=str(tmp_path / "logs"))
    try:
        assert job.wait(timeout=300) == [0, 0], job.tail()
    finally:
        job.kill()
    want = [r for r in read_metrics(tiny_stages[stage]) if "loss" in r]
    got = [r for r in read_metrics(workdir) if "loss" in r]
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2]
    for a, b in zip(got, want):
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{stage} {key}@{a['step']}")
