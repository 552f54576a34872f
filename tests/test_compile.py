"""`speech-jax compile`: the loop's train step compiled ahead of time for a topology, with per-chip memory,
FLOPs and the sharding report. Host devices (cpu:8) always; a TPU topology when libtpu is installed."""
import importlib.util
import math
import re

import jax
import pytest

from speech_jax.chips import CHIPS
from speech_jax.cli import main
from speech_jax.sharding_report import totals
from speech_jax.train.aot import abstract_batch, compile_step
from speech_jax.train.program import build_program
from stages import COMMON, OVERRIDES, ROOT, stage_config

FSDP_8 = ["--config.mesh.data=1", "--config.mesh.fsdp=8", "--config.mesh.tensor=1"]
CONFIG = f"{ROOT}/experiments/tokenizer/tiny.py"


def test_compiled_step_accounts_for_every_byte_per_chip(tiny_corpus):
    config = stage_config("tokenizer", tiny_corpus, *FSDP_8)
    r = compile_step(config, "cpu:8")
    assert r.num_chips == 8 and r.mesh == {"data": 1, "fsdp": 8, "tensor": 1}
    t = totals(r.rows)
    m = r.memory
    assert m["parameters"] == t["params"]["bytes_per_device"] + t["rest"]["bytes_per_device"]
    assert m["optimizer"] == t["opt_state"]["bytes_per_device"]
    # The batch's share: each field split over the 8 devices, plus the replicated rng key.
    batch = abstract_batch(config, build_program(config, jax.devices()[:8]).batch_shardings)
    per_device = sum(math.prod(b.sharding.shard_shape(b.shape)) * b.dtype.itemsize for b in batch.values())
    assert per_device <= m["batch"] <= per_device + 64
    # The state is donated: the new state reuses its buffers.
    assert m["aliased"] >= t["all"]["bytes_per_device"] - 64
    assert m["temporaries"] > 0 and m["total"] >= m["parameters"] + m["optimizer"] + m["temporaries"]
    # Per chip: at least the task's analytic count (3 x forward matmuls), and far from 8 chips' worth
    # (at this size the mel spectrograms and elementwise work are most of the rest).
    assert r.model_flops < r.flops < 8 * r.model_flops, (r.flops, r.model_flops)


def _cli(corpus, *extra):
    overrides = COMMON + OVERRIDES["tokenizer"] + FSDP_8 + [
        f"--config.data.data_dir={corpus['data_dir']}", f"--config.data.bpe_model={corpus['bpe_model']}"]
    return main(["compile", "--config", CONFIG, *extra, *overrides])


def test_compile_command_prints_memory_flops_and_sharding(tiny_corpus, capsys):
    assert _cli(tiny_corpus, "--topology", "cpu:8", "--chip", "v5e", "--rows", "0") == 0
    out = capsys.readouterr().out
    for text in ("per chip:", "optimizer state", "activations / temporaries", "of 16.00 GiB HBM",
                 "FLOPs per step per chip", "roofline:", "params/encoder/blocks/0/mlp/up/kernel", "(fsdp, None)"):
        assert text in out, text


def test_a_step_that_does_not_fit_names_its_biggest_consumers(tiny_corpus, capsys):
    assert _cli(tiny_corpus, "--topology", "cpu:8", "--chip", "v5e", "--hbm-fraction", "1e-6") == 3
    err = capsys.readouterr().err
    assert "does not fit" in err and "biggest consumers per chip: temporaries" in err
    assert "largest tensors per chip: params/" in err


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="TPU topologies need libtpu (extra 'tpu')")
def test_compile_for_a_tpu_topology(tiny_corpus):
    config = stage_config("tokenizer", tiny_corpus, "--config.mesh.data=1", "--config.mesh.fsdp=4")
    r = compile_step(config, "v5e:2x2")
    assert r.num_chips == 4 and r.device_kind.startswith("TPU v5")
    assert r.chip.name == "TPU v5e" and 0 < r.memory["total"] < r.chip.hbm_bytes
    assert r.memory["optimizer"] == totals(r.rows)["opt_state"]["bytes_per_device"]
    assert r.flops > 0 and min(r.step_time_bound) > 0


def test_fit_batch_reports_the_largest_batch_that_fits_next_to_one_that_does_not(tiny_corpus, capsys):
    config = stage_config("tokenizer", tiny_corpus, *FSDP_8)  # global batch 8 = the fsdp mesh: steps of 8
    budget = 3.5 * compile_step(config, "cpu:8", chip="v5e").memory["total"]  # room for ~3 x 8 examples
    assert _cli(tiny_corpus, "--topology", "cpu:8", "--chip", "v5e", "--fit-batch",
                "--hbm-fraction", str(budget / CHIPS["v5e"].hbm_bytes)) == 0
    out = capsys.readouterr().out
    found = re.search(r"largest global batch that fits: (\d+) \(\d+ per chip\)", out)
    assert found and "the next larger batch does not fit" in out, out
    batch = int(found.group(1))
    probed = {int(b): float(mib) for b, mib in re.findall(r"batch (\d+): ([0-9.]+) MiB per chip", out)}
    assert batch >= 16 and batch % 8 == 0 and len(probed) <= 5, probed
    assert probed[batch] * 2 ** 20 <= budget * 1.001 < probed[batch + 8] * 2 ** 20  # MiB printed to 1 place
    assert "tokenizer train step compiled for cpu:8" in out  # the fitting batch's own report follows
