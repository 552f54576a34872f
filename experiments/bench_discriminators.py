"""Where the Flow-VAE's GAN step spends its time: each sub-discriminator's forward and gradient, timed
alone on the batch the discriminator step sees (real and generated clips together), with XLA's FLOP count
and the GFLOP/s it reaches against the machine's matmul peak.

    python experiments/bench_discriminators.py [--config experiments/demo/flow_vae.py] [--batch 32] \
        [--seconds 1] [--out bench.json] [--config.model.stft_channels=16 ...]

The GAN step runs the discriminators' gradient once (their update, on 2B clips) and about one more
forward-and-backward on the generator's side (generated clips, with the real ones' features for feature
matching), so the "all" row's gradient time is roughly half the step's discriminator cost. A row's share is
of the "all" row's gradient time (the parts, timed alone, add up to a little more).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.bench import print_results  # noqa: E402
from speech_jax.config import apply_overrides, load_config  # noqa: E402
from speech_jax.models.discriminators import Discriminators, PeriodDiscriminator, STFTDiscriminator  # noqa: E402
from speech_jax.train import metrics as metrics_lib  # noqa: E402


def time_module(module: nnx.Module, wav: jax.Array, repeats: int = 3) -> dict:
    """Best-of-`repeats` wall time of the forward and of the gradient of a squared-logit loss."""
    graphdef, state = nnx.split(module)

    def loss(s, x):
        logits = nnx.merge(graphdef, s)(x)[0]
        return sum(jnp.mean(jnp.square(y)) for y in (logits if isinstance(logits, list) else [logits]))

    out = {}
    for name, fn in (("forward", jax.jit(loss)), ("gradient", jax.jit(jax.grad(loss)))):
        flops = fn.lower(state, wav).cost_analysis()["flops"]
        jax.block_until_ready(fn(state, wav))  # compile
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(fn(state, wav))
            best = min(best, time.perf_counter() - t)
        out[name] = (best, flops)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/demo/flow_vae.py")
    ap.add_argument("--batch", type=int, default=32, help="clips: the D step's real + generated")
    ap.add_argument("--seconds", type=float, default=1.0, help="clip length")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args, rest = ap.parse_known_args(argv)
    config = apply_overrides(load_config(args.config), rest)
    cfg = config.model
    dtype = jnp.dtype(cfg.dtype)
    peak, peak_src = metrics_lib.device_peak_flops(config.train.peak_flops)
    samples = int(args.seconds * config.data.sample_rate)
    wav = 0.1 * jax.random.normal(jax.random.key(0), (args.batch, samples))
    rngs = nnx.Rngs(0)
    parts = {f"MPD period {p}": PeriodDiscriminator(p, cfg.mpd_channels, max_channels=int(cfg.mpd_max_channels),
                                                    dtype=dtype, rngs=rngs) for p in cfg.mpd_periods}
    parts.update({f"STFT n_fft {n}": STFTDiscriminator(n, cfg.stft_channels, tuple(cfg.stft_bands), dtype=dtype,
                                                       rngs=rngs) for n in cfg.stft_ffts})
    parts["all"] = Discriminators(cfg, rngs=rngs)
    res = {"config": args.config, "device": f"{jax.devices()[0].device_kind}",
           "batch (clips, samples)": (args.batch, samples),
           "peak GFLOP/s": peak / 1e9, "peak source": peak_src}
    timings = {name: time_module(m, wav) for name, m in parts.items()}
    total = timings["all"]["gradient"][0]
    for name, t in timings.items():
        (fwd, fwd_flops), (grad, grad_flops) = t["forward"], t["gradient"]
        res[f"{name}: forward ms, GFLOP"] = (round(fwd * 1e3, 1), round(fwd_flops / 1e9, 2))
        res[f"{name}: gradient ms, GFLOP, GFLOP/s, share"] = (
            round(grad * 1e3, 1), round(grad_flops / 1e9, 2), round(grad_flops / grad / 1e9, 1),
            round(grad / total, 3))
    print_results(res, args.out)
    return res


if __name__ == "__main__":
    main()
