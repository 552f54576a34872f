"""Benchmark of the Flow-VAE GAN stage: compile time, step time, non-padding audio-seconds/s, MFU, peak memory,
and the decoder's real-time factor.

    python experiments/bench_flow_vae.py --config experiments/flow_vae/small.py --data-dir D [--steps 5] \
        [--decode-seconds 10] [--out bench.json] [--config.data.batch_size=8 ...]

MFU is the task's analytic `flops_per_step` (XLA's count of one generator and one discriminator forward,
3 G + 10 D) ÷ (step time × devices × peak); on the CPU the peak is a square fp32 matmul measured in this
same run (`measured_matmul_peak`), so MFU says how close the step gets to the machine's matmul speed.
The decoder's RTF is wall time ÷ audio seconds for decoding `--decode-seconds` of latents at batch 1,
timed after compiling (below 1: faster than real time). Shared machines: the load average is printed
with the numbers, and CPU seconds per step beside the wall time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.bench import peak_memory_bytes, print_results  # noqa: E402
from speech_jax.config import apply_overrides, load_config  # noqa: E402
from speech_jax.train import metrics as metrics_lib  # noqa: E402
from speech_jax.train.loop import Trainer  # noqa: E402


def same_shape_batches(trainer, n: int) -> list[dict]:
    """n batches of the most common padded shape (other buckets would add compiles to the timing)."""
    it = trainer.data_iterator(trainer.config.data.train_split, training=True)
    by_shape: dict = {}
    for _ in range(20 * n):
        b = next(it)
        by_shape.setdefault(b["audio"].shape, []).append(b)
        best = max(by_shape.values(), key=len)
        if len(best) >= n:
            return best
    return max(by_shape.values(), key=len)


def bench_train(trainer, steps: int) -> dict:
    config = trainer.config
    batches = same_shape_batches(trainer, steps + 1)
    state = trainer.initial_state()
    t = time.perf_counter()
    state, m = trainer.step(state, batches[0], 0)
    jax.block_until_ready(m)
    first = time.perf_counter() - t
    walls, cpus = [], []
    for i, b in enumerate(batches[1:], start=1):
        t, c = time.perf_counter(), time.process_time()
        state, m = trainer.step(state, b, i)
        jax.block_until_ready(m)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    step = float(np.median(walls))
    secs = float(np.mean([np.sum(b["audio_len"]) for b in batches[1:]])) / config.data.sample_rate
    flops = trainer.task.flops_per_step(config, {k: v.shape for k, v in batches[0].items()})
    return dict(state=state, batch=batches[0]["audio"].shape, first=first, step=step, steps=len(walls),
                cpu=float(np.median(cpus)), secs=secs, flops=flops, loss=float(m["loss"]),
                padding=1 - secs * config.data.sample_rate / np.size(batches[0]["audio"]))


def bench_decoder(trainer, state, seconds: float, repeats: int = 3) -> dict:
    """Decode `seconds` of random latents at batch 1 (no frame mask: every frame is real)."""
    model = nnx.merge(trainer.graphdef, state.params, state.rest)
    graphdef, vae_state = nnx.split(model.generator)
    vae = model.generator
    rate = trainer.config.data.sample_rate / vae.hop
    z = jax.random.normal(jax.random.key(0), (1, int(round(seconds * rate)), vae.latent_dim))
    decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
    t = time.perf_counter()
    decode(vae_state, z).block_until_ready()
    compile_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        decode(vae_state, z).block_until_ready()
        best = min(best, time.perf_counter() - t)
    audio = z.shape[1] * vae.hop / trainer.config.data.sample_rate
    return dict(decode_compile=compile_s, decode_wall=best, decode_audio=audio, rtf=best / audio)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/flow_vae/small.py")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=5, help="timed steps after the compiling one")
    ap.add_argument("--decode-seconds", type=float, default=10.0)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args, rest = ap.parse_known_args(argv)
    config = apply_overrides(load_config(args.config), rest)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    load_before = os.getloadavg()[0]
    peak, peak_src = metrics_lib.device_peak_flops(config.train.peak_flops)  # CPU: a matmul measured now
    trainer = Trainer(config, tempfile.mkdtemp())
    tr = bench_train(trainer, args.steps)
    dec = bench_decoder(trainer, tr.pop("state"), args.decode_seconds)
    devices = jax.device_count()
    res = {
        "config": args.config, "device": f"{jax.devices()[0].device_kind} x{devices}",
        "batch (B, samples)": tuple(tr["batch"]), "padding fraction": tr["padding"],
        "compile + first step (s)": tr["first"], "compile (s, first - median step)": tr["first"] - tr["step"],
        "step time (s, median)": tr["step"], "CPU seconds per step": tr["cpu"], "steps timed": tr["steps"],
        "audio seconds per s (non-padding)": tr["secs"] / tr["step"],
        "GFLOP per step (3 G + 10 D)": tr["flops"] / 1e9,
        "peak GFLOP/s per device": peak / 1e9, "peak source": peak_src,
        "MFU": tr["flops"] / tr["step"] / (peak * devices),
        "peak memory (GiB)": peak_memory_bytes() / 2**30,
        f"decoder RTF (batch 1, {dec['decode_audio']:.0f} s)": dec["rtf"],
        "decoder wall (s)": dec["decode_wall"], "decoder compile (s)": dec["decode_compile"],
        "loss (last step)": tr["loss"],
        "load average (before, after)": (round(load_before, 2), round(os.getloadavg()[0], 2)),
    }
    print_results(res, args.out)
    return res


if __name__ == "__main__":
    main()
