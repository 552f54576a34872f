"""Several JAX processes train like one: 2 processes × 2 CPU devices (speech_jax/local_job.py), parameters
and batch sharded over fsdp=4 across both, against test_train.py's single process on 8 devices (2×2×2
mesh) with the same global batches.

One 2-process job serves most tests of the tokenizer (each process costs about one compilation, ~37 CPU-seconds): it trains
test_train's FAST config, agreeing every 3 steps whether to stop, and process 1 alone gets a SIGTERM
after its first step; both must save step 3 and stop. Its checkpoint is then resumed by one process and
by four (one device each). The other stages: test_multiprocess_stages.py."""
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import pytest

from speech_jax.local_job import Job
from test_train import FAST, TINY, flat, make_config, params_of, shared_full_run
from speech_jax.train.loop import train
from speech_jax.train.metrics import read_metrics

pytestmark = pytest.mark.slow

KEYS = ("loss", "mel_loss", "ctc_loss", "code_usage", "grad_norm")


def train_argv(corpus, workdir):
    """test_train's FAST config over fsdp=4, whichever processes hold the 4 devices."""
    return [sys.executable, "-m", "speech_jax.cli", "train", "--config", TINY, "--workdir", workdir,
            f"--config.data.data_dir={corpus['data_dir']}", f"--config.data.bpe_model={corpus['bpe_model']}",
            "--config.train.peak_flops=1e11", *FAST, "--config.train.eval_every=0",
            "--config.train.stop_check_every=3",
            "--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=1"]


@pytest.fixture(scope="module")
def single(tiny_corpus, tmp_path_factory):
    return shared_full_run(tiny_corpus, tmp_path_factory)[0]


@pytest.fixture(scope="module")
def preempted(tiny_corpus, tmp_path_factory):
    """(workdir, exit codes, each process's output) of the 2-process job."""
    root = str(tmp_path_factory.mktemp("two_processes"))
    workdir = os.path.join(root, "run")
    job = Job(train_argv(tiny_corpus, workdir), num_processes=2, devices=2, logdir=os.path.join(root, "logs"))
    try:
        deadline = time.monotonic() + 300
        while "INFO step 1:" not in open(job.logs[1], errors="replace").read():
            assert all(p.poll() is None for p in job.procs), job.tail()
            assert time.monotonic() < deadline, f"no step after 300 s\n{job.tail()}"
            time.sleep(0.1)
        job.procs[1].send_signal(signal.SIGTERM)
        codes = job.wait(timeout=120)
    finally:
        job.kill()
    return workdir, codes, [open(log, errors="replace").read() for log in job.logs], job.tail()


def test_sigterm_to_one_process_stops_both_at_one_checkpoint(preempted):
    workdir, codes, outputs, tail = preempted
    assert codes == [0, 0], tail
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["3"]
    for out in outputs:  # the CLI prints the run's result last
        result = out.strip().splitlines()[-1]
        assert re.match(r"step=3 ", result) and "preempted=True" in result, tail
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == [1, 2, 3]


# Each process says what it sees; stop.agree must give every process one answer: a deadline on process 0's
# clock, a SIGTERM on any process.
AGREE = ("from speech_jax import sharding; sharding.maybe_initialize_distributed(); import jax; "
         "from speech_jax.train import stop; p = jax.process_index(); "
         "print('agreed', [stop.agree(False, p == 0), stop.agree(False, p == 1), stop.agree(p == 1, False)])")


def test_process_zeros_deadline_and_any_sigterm_stop_every_process(tmp_path):
    """`train.max_minutes` is decided on process 0's clock, where hosts' start times differ; the loop's save
    path after agreeing is the SIGTERM test's."""
    job = Job([sys.executable, "-c", AGREE], num_processes=2, devices=1, logdir=str(tmp_path))
    try:
        assert job.wait(timeout=120) == [0, 0], job.tail()
    finally:
        job.kill()
    for log in job.logs:
        said = [line.strip() for line in open(log) if line.startswith("agreed")]
        assert said == ["agreed [(False, True), (False, False), (True, False)]"], job.tail()


def test_two_processes_train_like_one(preempted, single, tiny_corpus):
    workdir = preempted[0]
    want = {r["step"]: r for r in read_metrics(single) if "loss" in r}
    for row in (r for r in read_metrics(workdir) if "loss" in r):
        for key in KEYS:
            np.testing.assert_allclose(row[key], want[row["step"]][key], rtol=1e-5, err_msg=f"{key}@{row['step']}")
    for x, y in zip(flat(params_of(workdir, tiny_corpus, 3)), flat(params_of(single, tiny_corpus, 3))):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def assert_continues_like_single(workdir, single, tiny_corpus):
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == [1, 2, 3, 4, 5, 6]  # resumed at 3
    want = {r["step"]: r for r in read_metrics(single) if "loss" in r}
    got = {r["step"]: r for r in read_metrics(workdir) if "loss" in r}
    for step in (4, 5, 6):
        for key in KEYS:
            np.testing.assert_allclose(got[step][key], want[step][key], rtol=1e-5, err_msg=f"{key}@{step}")
    for x, y in zip(flat(params_of(workdir, tiny_corpus, 6)), flat(params_of(single, tiny_corpus, 6))):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def test_one_process_resumes_the_two_process_checkpoint_exactly(preempted, single, tiny_corpus, tmp_path):
    """The data iterator's position and the sharded state written by 2 processes continue in one."""
    workdir = str(tmp_path / "resumed")
    shutil.copytree(preempted[0], workdir)
    assert train(make_config(tiny_corpus), workdir)["step"] == 6
    assert_continues_like_single(workdir, single, tiny_corpus)


def test_four_processes_resume_the_two_process_checkpoint_exactly(preempted, single, tiny_corpus, tmp_path):
    """The same checkpoint continued by 4 processes of one device each, each keeping its quarter of a batch."""
    workdir = str(tmp_path / "resumed")
    shutil.copytree(preempted[0], workdir)
    job = Job(train_argv(tiny_corpus, workdir), num_processes=4, devices=1, logdir=str(tmp_path / "logs"))
    try:
        assert job.wait(timeout=300) == [0, 0, 0, 0], job.tail()
    finally:
        job.kill()
    assert_continues_like_single(workdir, single, tiny_corpus)
