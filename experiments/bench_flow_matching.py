"""Flow-matching benchmark: train-step MFU, and the sampler's real-time factor versus the number of
solver steps, with and without classifier-free guidance. Synthetic inputs of the config's shapes (no
corpus or trained stage needed).

  python experiments/bench_flow_matching.py --config experiments/flow_matching/small.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.bench import peak_memory_bytes  # noqa: E402
from speech_jax.config import load_config  # noqa: E402
from speech_jax.infer import ode  # noqa: E402
from speech_jax.models import cfm  # noqa: E402
from speech_jax.models.flow_matching import FlowMatchingDiT, flops_per_frame  # noqa: E402
from speech_jax.train.metrics import measured_matmul_peak  # noqa: E402


def _timed(fn, *args, repeats: int):
    out = jax.block_until_ready(fn(*args))  # compile + warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t) / repeats, out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="experiments/flow_matching/small.py")
    ap.add_argument("--latent-dim", type=int, default=64)
    ap.add_argument("--codebook-size", type=int, default=1024)
    ap.add_argument("--spk-dim", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0, help="training segment length")
    ap.add_argument("--steps", type=int, default=3, help="timed train steps")
    args = ap.parse_args(argv)

    config = load_config(args.config)
    cfg = config.model
    cfg.update(dict(latent_dim=args.latent_dim, codebook_size=args.codebook_size, spk_dim=args.spk_dim))
    rate = config.data.sample_rate / config.mel.hop_length  # latent frames per second (50)
    b, f = config.data.batch_size, int(round(args.seconds * rate / 2)) * 2
    model = FlowMatchingDiT(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = optax.adamw(1e-4)
    opt = tx.init(params)
    k = jax.random.split(jax.random.key(0), 3)
    x1 = jax.random.normal(k[0], (b, f, cfg.latent_dim))
    tokens = jax.random.randint(k[1], (b, f // 2), 0, cfg.codebook_size)
    spk = jax.random.normal(k[2], (b, cfg.spk_dim))
    mask = jnp.ones((b, f), bool)

    @jax.jit
    def train_step(params, opt, rng):
        def loss(p):
            return cfm.cfm_loss(nnx.merge(graphdef, p), x1, mask, tokens, spk, rng)[0]
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    t0 = time.perf_counter()
    params, opt, _ = jax.block_until_ready(train_step(params, opt, k[0]))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, opt, _ = jax.block_until_ready(train_step(params, opt, jax.random.key(i)))
    step_s = (time.perf_counter() - t0) / args.steps
    peak = measured_matmul_peak()
    flops = 3 * b * f * flops_per_frame(cfg, f)
    rows = {"batch": b, "frames": f, "compile_s": compile_s, "step_s": step_s,
            "latent_seconds_per_s": b * f / rate / step_s, "mfu": flops / step_s / peak, "peak_flops": peak}

    # Sampling one utterance of `seconds` at batch 1: RTF = wall time / audio seconds.
    model = nnx.merge(graphdef, params)
    x0 = jax.random.normal(k[0], (1, f, cfg.latent_dim))
    cond = (tokens[:1], mask[:1], spk[:1], jnp.zeros_like(x0), jnp.zeros((1, f), bool))
    for cfg_w in (0.0, 0.7):
        for n in (4, 10, 32):
            fn = jax.jit(lambda x, *c, n=n, w=cfg_w: ode.sample(model, x, *c, steps=n, cfg_weight=w))
            dt, _ = _timed(fn, x0, *cond, repeats=3)
            rows[f"rtf_steps{n}_cfg{cfg_w}"] = dt / (f / rate)
    rows["peak_rss_gb"] = peak_memory_bytes() / 2**30
    for key, v in rows.items():
        print(f"{key:>24}: {v:.4g}" if isinstance(v, float) else f"{key:>24}: {v}")
    return rows


if __name__ == "__main__":
    main()
