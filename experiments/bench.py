"""Benchmark of a training stage: step time, non-padding audio-seconds/s, MFU, compile time, peak memory,
and the Grain pipeline's throughput against what the step consumes.

    python experiments/bench.py --config experiments/tokenizer/small.py --data-dir data [--steps 20] \
        [--config.data.batch_size=16 ...]

MFU is analytic training FLOPs ÷ (step time × devices × peak), where the peak is the published
dense-matmul figure on accelerators and a square matmul measured in this same run on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from speech_jax.config import apply_overrides, load_config  # noqa: E402
from speech_jax.train import metrics as metrics_lib  # noqa: E402
from speech_jax.train.loop import Trainer  # noqa: E402


def peak_memory_bytes() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # CPU: the process's peak RSS


def bench_pipeline(trainer, n: int) -> dict:
    it = trainer.data_iterator(trainer.config.data.train_split, training=True)
    next(it)  # opens files, starts workers
    t = time.perf_counter()
    secs = 0.0
    for _ in range(n):
        b = next(it)
        secs += float(np.sum(b["audio_len"])) / trainer.config.data.sample_rate
    dt = time.perf_counter() - t
    return {"pipeline_batches_per_s": n / dt, "pipeline_audio_seconds_per_s": secs / dt}


def bench_mel(trainer, batch) -> dict:
    """Log-mel of one batch on the host with librosa vs in JAX on the device (decides where it runs)."""
    import librosa

    from speech_jax.audio.mel import MelSpec, log_mel
    spec = MelSpec.from_config(trainer.config.mel)
    audio = batch["audio"]
    librosa.feature.melspectrogram(y=audio[0], sr=spec.sample_rate, n_fft=spec.n_fft)  # warm-up
    t = time.perf_counter()
    for row in audio:
        librosa.feature.melspectrogram(y=row, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
                                       win_length=spec.win_length, n_mels=spec.n_mels, power=spec.power)
    host = time.perf_counter() - t
    f = jax.jit(lambda x: log_mel(x, spec))
    x = jax.device_put(audio)
    f(x).block_until_ready()
    t = time.perf_counter()
    for _ in range(5):
        f(x).block_until_ready()
    dev = (time.perf_counter() - t) / 5
    return {"mel_host_librosa_ms": host * 1e3, "mel_device_jax_ms": dev * 1e3}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/tokenizer/small.py")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args, rest = ap.parse_known_args(argv)
    config = apply_overrides(load_config(args.config), rest)
    if args.data_dir:
        config.data.data_dir = args.data_dir
    peak, peak_src = metrics_lib.device_peak_flops(config.train.peak_flops)
    import tempfile
    trainer = Trainer(config, tempfile.mkdtemp())
    res = {"config": args.config, "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
           "peak_flops_per_device": peak, "peak_source": peak_src, "batch_size": config.data.batch_size}
    res.update(bench_pipeline(trainer, max(args.steps, 5)))

    it = trainer.data_iterator(config.data.train_split, training=True)
    # Time the most common bucket only, so compilation of other buckets stays out of the step time.
    batches, by_shape = [], {}
    while not batches or len(batches) < args.steps + 1:
        b = next(it)
        by_shape.setdefault(b["audio"].shape, []).append(b)
        batches = max(by_shape.values(), key=len)
        if sum(map(len, by_shape.values())) > 20 * (args.steps + 1):
            break
    res.update(bench_mel(trainer, batches[0]))
    res["bucket_samples"] = batches[0]["audio"].shape[1]
    state = trainer.initial_state()
    t = time.perf_counter()
    state, m = trainer.step(state, batches[0], 0)
    jax.block_until_ready(m)
    res["compile_and_first_step_s"] = time.perf_counter() - t
    t = time.perf_counter()
    n = 0
    for i, b in enumerate(batches[1:], start=1):
        state, m = trainer.step(state, b, i)
        n += 1
    jax.block_until_ready((state, m))
    dt = (time.perf_counter() - t) / max(n, 1)
    secs = np.mean([float(np.sum(b["audio_len"])) / config.data.sample_rate for b in batches[1:]])
    flops = trainer.task.flops_per_step(config, {k: v.shape for k, v in batches[0].items()})
    res.update(step_time_s=dt, steps_timed=n, audio_seconds_per_s=secs / dt,
               padding_fraction=1 - secs * config.data.sample_rate / np.size(batches[0]["audio"]),
               tflops_per_step=flops / 1e12, mfu=flops / dt / (peak * jax.device_count()),
               pipeline_over_step_consumption=res["pipeline_audio_seconds_per_s"] / (secs / dt),
               peak_memory_gb=peak_memory_bytes() / 2**30, loss=float(m["loss"]))
    print_results(res, args.out)
    return res


def host_facts() -> dict:
    """What a CPU figure depends on, printed with every benchmark: two machines 'of the same kind' can
    differ in processor model and vector units, library versions, thread settings and load."""
    import importlib.metadata
    import platform

    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    vector = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return {"host cpu": model or platform.processor(), "host vector units": " ".join(vector) or "unknown",
            "host cores (usable / online)": f"{len(os.sched_getaffinity(0))} / {os.cpu_count()}",
            "host load average (1 min)": os.getloadavg()[0],
            "jax / jaxlib": f"{jax.__version__} / {importlib.metadata.version('jaxlib')}",
            "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
            "SPEECH_JAX_MALLOC": os.environ.get("SPEECH_JAX_MALLOC", "(unset)"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}


def print_results(res: dict, out: str | None = None) -> None:
    """One aligned `name  value` line per result (floats to 4 significant digits), after the host facts the
    figures depend on; also JSON to `out`."""
    res = {**host_facts(), **res}
    width = max(len(k) for k in res)
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if out:
        with open(out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
