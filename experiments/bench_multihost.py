"""Per-step cost of a multi-process run against one process on the same machine, and of the stop
agreement (`train.stop_check_every`: one all-gather of two flags across processes).

    python experiments/bench_multihost.py --data-dir /tmp/bench_data [--steps 30] [--processes 2]

Trains the tiny tokenizer (test_train.py's FAST sizes) on the embedded corpus, prepared there when
missing: 1 process × 8 CPU devices, then N processes × 8/N devices on the same 2×2×2 mesh, the latter with
and without the agreement after every step. Prints the mean time of a step after compilation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's speech_jax, in the launched processes too
SIZES = ["--config.model.d_model=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
         "--config.model.num_kv_heads=1", "--config.model.mlp_dim=64", "--config.model.codebook_size=32",
         "--config.model.code_dim=4", "--config.mel.n_mels=40", "--config.data.long_utterances=crop",
         "--config.data.max_seconds=2.0", "--config.data.buckets_seconds=[2.0]", "--config.data.batch_size=8",
         "--config.train.peak_flops=1e11", "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


def worker(corpus: dict, steps: int, agree: bool) -> dict:
    """Runs in every process of the job: the loop's step (and agreement) without logging or checkpoints."""
    import jax

    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train import stop
    from speech_jax.train.loop import Trainer

    config = apply_overrides(load_config(os.path.join(ROOT, "experiments", "tokenizer", "tiny.py")),
                             SIZES + [f"--config.data.data_dir={corpus['data_dir']}",
                                      f"--config.data.bpe_model={corpus['bpe_model']}"])
    trainer = Trainer(config, "/tmp/unused")
    it = trainer.data_iterator("train", training=True)
    batches = [next(it) for _ in range(4)]
    state = trainer.initial_state()
    state, m = trainer.step(state, batches[0], 0)  # compile
    jax.block_until_ready(m)
    t = time.perf_counter()
    for i in range(1, steps + 1):
        state, m = trainer.step(state, batches[i % len(batches)], i)
        if agree:
            stop.agree(False, False)
    jax.block_until_ready(state)
    return {"step_time": (time.perf_counter() - t) / steps}


def run_job(n: int, corpus: dict, steps: int, agree: bool) -> float:
    from speech_jax.local_job import Job

    logdir = tempfile.mkdtemp(prefix="bench_multihost_")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(corpus), "--steps", str(steps)]
    argv += ["--agree"] if agree else []
    job = Job(argv, n, 8 // n, logdir)
    codes = job.wait(timeout=900)
    if codes != [0] * n:
        raise RuntimeError(f"job failed: {codes}\n{job.tail()}")
    lines = [line for line in open(job.logs[0]).read().splitlines() if line.startswith("{")]
    return json.loads(lines[-1])["step_time"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/tmp/bench_data")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--worker")
    ap.add_argument("--agree", action="store_true")
    args = ap.parse_args()
    if args.worker:
        from speech_jax import sharding
        sharding.maybe_initialize_distributed()
        print(json.dumps(worker(json.loads(args.worker), args.steps, args.agree)), flush=True)
        return
    # No persistent compilation cache: a process that loads its programs while a peer still compiles
    # reaches the first collective alone, and Gloo gives up on a peer after 30 s.
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    from data_pipelines.prepare import prepare
    corpus = prepare("espeak_tts", args.data_dir, config="tiny")
    corpus = {k: corpus[k] for k in ("data_dir", "bpe_model")}
    one = run_job(1, corpus, args.steps, agree=False)
    several = run_job(args.processes, corpus, args.steps, agree=False)
    agreed = run_job(args.processes, corpus, args.steps, agree=True)
    print(f"step time: 1 process {one * 1e3:.1f} ms; {args.processes} processes {several * 1e3:.1f} ms "
          f"(+{(several - one) * 1e3:.1f} ms); with the stop agreement every step {agreed * 1e3:.1f} ms "
          f"(+{(agreed - several) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
