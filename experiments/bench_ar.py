"""Benchmark of the AR stage on synthetic batches (no prepared corpus): train-step time, non-padding
tokens/s, MFU, compile time, peak memory, and KV-cache decoding speed.

    python experiments/bench_ar.py [--config small] [--impl auto] [--steps 10] [--bucket-seconds 2.4] \
        [--malloc=default] [--config.model.dtype=bfloat16 ...]

Batches have the shapes the config's pipeline produces: text and prompt text padded to
`data.max_text_len`, prompt tokens to `data.prompt_max_seconds`, target tokens to one bucket (+ EOS),
the reference to `data.ref_seconds[1]`; ids are random within the vocabularies, lengths random within
the pads (the padding fractions are reported).

MFU = counted training FLOPs ÷ (median step time × matmul peak). The peak is a square matmul in the
compute dtype measured before every timed step (the best of them), so a machine shared with other jobs
lowers the MFU rather than inflating it; `cores_busy` (process CPU time ÷ wall time per step) shows how much of the CPU the
step got. Two counts:
  mfu          `task.flops_per_step`: the causal self-attention counted at half of its T×S square, as
               MaxText does (what a causal kernel needs); the fair figure.
  mfu_full_attention  the whole square counted, as a dense implementation computes it.

Host memory (`--malloc`): "keep" (default) applies `speech_jax.host_memory.keep_freed_host_memory`
before JAX starts (glibc keeps freed memory mapped, so XLA:CPU's per-step temporaries stop page-faulting);
"default" leaves glibc as it is. `page_faults_per_step` shows the difference.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _malloc_arg(argv: list[str]) -> str:
    for i, a in enumerate(argv):
        if a.startswith("--malloc="):
            return a.split("=", 1)[1]
        if a == "--malloc" and i + 1 < len(argv):
            return argv[i + 1]
    return "keep"


# Before JAX exists: glibc settings apply to threads created afterwards (so only when run as a script).
from speech_jax.host_memory import keep_freed_host_memory  # noqa: E402

MALLOC_KEPT = __name__ == "__main__" and _malloc_arg(sys.argv) == "keep" and keep_freed_host_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments.bench import peak_memory_bytes, print_results  # noqa: E402
from speech_jax.config import apply_overrides, load_config  # noqa: E402
from speech_jax.infer.ar_decode import STATIC_ARGNAMES, generate  # noqa: E402
from speech_jax.models.ar_layout import build_prefix  # noqa: E402
from speech_jax.train import metrics as metrics_lib  # noqa: E402
from speech_jax.train.optim import make_optimizer  # noqa: E402
from speech_jax.train.state import init_train_state  # noqa: E402
from speech_jax.train.step import make_train_step  # noqa: E402
from speech_jax.train.tasks import ar as task  # noqa: E402

CONFIGS = {name: f"experiments/ar/{name}.py" for name in ("tiny", "small", "base")}


def batch_shapes(config, bucket_seconds: float) -> dict:
    """The padded shapes of one training batch of the given bucket, as `PadBatch` builds them."""
    d = config.data
    samples_per_token = 2 * config.mel.hop_length
    b = d.batch_size
    bucket = int(round(bucket_seconds * d.sample_rate / samples_per_token)) * samples_per_token
    ref = int(round(d.ref_seconds[1] * d.sample_rate / samples_per_token)) * samples_per_token
    prompt = int(np.ceil(d.prompt_max_seconds * d.sample_rate / samples_per_token))
    return {"audio": (b, bucket), "text_ids": (b, d.max_text_len), "prompt_text_ids": (b, d.max_text_len),
            "prompt_tokens": (b, prompt), "tokens": (b, bucket // samples_per_token), "ref_audio": (b, ref)}


def synthetic_batch(config, shapes: dict, seed: int = 0) -> dict:
    """Random ids within the vocabularies; lengths between half and all of each pad (every row one-shot
    capable), references between the crop bounds."""
    rng = np.random.default_rng(seed)
    m = config.model
    out = {}

    def ids(key, vocab, lo=0):
        b, n = shapes[key]
        x = rng.integers(lo, vocab, (b, n), dtype=np.int32)
        length = rng.integers(max(n // 2, 1), n + 1, (b,), dtype=np.int32)
        x[np.arange(n)[None] >= length[:, None]] = 0
        return x, length

    out["text_ids"], out["text_len"] = ids("text_ids", m.text_vocab_size, 1)
    out["prompt_text_ids"], out["prompt_text_len"] = ids("prompt_text_ids", m.text_vocab_size, 1)
    out["prompt_tokens"], out["prompt_tokens_len"] = ids("prompt_tokens", m.codebook_size)
    out["tokens"], out["tokens_len"] = ids("tokens", m.codebook_size)
    b, n = shapes["audio"]
    out["audio_len"] = (out["tokens_len"] * (n // shapes["tokens"][1])).astype(np.int32)
    out["audio"] = (0.1 * rng.standard_normal((b, n))).astype(np.float32)
    b, n = shapes["ref_audio"]
    sr = config.data.sample_rate
    out["ref_len"] = rng.integers(int(config.data.ref_seconds[0] * sr), n + 1, (b,), dtype=np.int32)
    out["ref_audio"] = np.where(np.arange(n)[None] < out["ref_len"][:, None],
                                0.1 * rng.standard_normal((b, n)), 0.0).astype(np.float32)
    out["speaker_id"] = rng.integers(0, 100, (b,), dtype=np.int32)
    return out


def full_attention_flops(config, shapes: dict) -> float:
    """Training FLOPs with the whole causal square counted (what a dense attention computes):
    `flops_per_step` counts half of it."""
    m = config.model
    b, seq = shapes["text_ids"][0], task.layout_length(shapes, config.model.get("pack_prompt_slots", -1))
    masked_half = 3 * b * m.num_layers * 2 * 2 * seq * (seq / 2) * m.d_model
    return task.flops_per_step(config, shapes) + masked_half


def bench_train(config, batch: dict, steps: int, peak_n: int) -> dict:
    model = task.build_model(config, nnx.Rngs(config.train.seed))
    tx, schedule = make_optimizer(config.optim, config.train.steps)
    graphdef, state = init_train_state(model, tx)
    del model
    step = jax.jit(make_train_step(task, graphdef, tx, schedule), donate_argnums=0)
    batch = jax.device_put(batch)
    rng = jax.random.key(0)
    t = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t
    state, m = compiled(state, batch, rng)
    jax.block_until_ready(m)
    dtype = jnp.dtype(config.model.dtype)  # the peak of the dtype the matmuls run in
    peaks = [metrics_lib.measured_matmul_peak(peak_n, dtype) for _ in range(2)]
    times, cpu, faults = [], [], []
    for i in range(steps):
        peaks.append(metrics_lib.measured_matmul_peak(peak_n, dtype))  # interleaved: the load the steps see
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        state, m = compiled(state, batch, jax.random.fold_in(rng, i))
        jax.block_until_ready((state, m))
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        times.append(time.perf_counter() - t)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
        faults.append(r1.ru_minflt - r0.ru_minflt)
    dt = float(np.median(times))
    return {"compile_s": compile_s, "step_time_s": dt, "step_time_min_s": float(np.min(times)),
            "cpu_s_per_step": float(np.median(cpu)), "cores_busy": float(np.median(cpu)) / dt,
            "page_faults_per_step": float(np.median(faults)), "peak": max(peaks), "loss": float(m["loss"]),
            "one_shot_fraction": float(m["one_shot_fraction"]), "state": state, "graphdef": graphdef}


def decode_inputs(config, batch: dict, rows: int, model):
    pick = {k: v[np.arange(rows) % len(v)] for k, v in batch.items()}  # rows beyond the batch repeat it
    prefix = build_prefix(pick["text_ids"], pick["text_len"], pick["prompt_text_ids"], pick["prompt_text_len"],
                          pick["prompt_tokens"], pick["prompt_tokens_len"],
                          codebook_size=config.model.codebook_size, use_speaker=model.speaker != "none")
    spk = jax.jit(lambda a, n: model.speaker_embedding(a, n))(pick["ref_audio"], pick["ref_len"])
    return prefix, spk


def bench_generate(graphdef, params, config, batch: dict, rows: int, n: int, greedy: bool) -> dict:
    """Tokens/s of `generate`: prefill + n decode steps per row. The length rules mask EOS until the
    last step, so every row runs all n steps (n - 1 audio tokens and the forced EOS)."""
    model = nnx.merge(graphdef, params)
    prefix, spk = decode_inputs(config, batch, rows, model)
    gen = jax.jit(generate, static_argnums=0, static_argnames=STATIC_ARGNAMES)
    kw = dict(max_new_tokens=n, greedy=greedy, min_ratio=1e6, max_ratio=1e6)
    t = time.perf_counter()
    toks, lens = gen(graphdef, params, prefix, spk, jax.random.key(1), **kw)
    jax.block_until_ready(toks)
    compile_s = time.perf_counter() - t
    best = float("inf")
    for i in range(2):
        t = time.perf_counter()
        toks, lens = gen(graphdef, params, prefix, spk, jax.random.key(2 + i), **kw)
        jax.block_until_ready(toks)
        best = min(best, time.perf_counter() - t)
    assert int(jnp.min(lens)) == n - 1, "generation stopped early"
    return {f"decode_b{rows}_tokens_per_s": rows * n / best, f"decode_b{rows}_s": best,
            f"decode_b{rows}_compile_s": compile_s}


def bench_step_latency(graphdef, params, config, batch: dict, rows: int, n: int, points: int = 4,
                       reps: int = 10) -> dict:
    """Per-token latency of `decode_step` at several cache fill levels (cache sized prefix + n): `reps`
    consecutive steps in one jitted loop from each level, so dispatch is not counted."""
    model = nnx.merge(graphdef, params)
    prefix, spk = decode_inputs(config, batch, rows, model)
    s0 = prefix["valid"].shape[1]
    pos0 = jnp.sum(prefix["valid"], 1).astype(jnp.int32)

    @jax.jit
    def prefill(p, prefix, spk):
        m = nnx.merge(graphdef, p)
        return m.prefill(prefix, spk, m.init_cache(rows, s0 + n))[1]

    @jax.jit
    def run(p, cache, fill):
        m = nnx.merge(graphdef, p)

        def body(i, carry):
            tok, cache = carry
            logits, cache = m.decode_step(tok, pos0 + fill + i, s0 + fill + i, cache)
            return jnp.argmax(logits, -1).astype(jnp.int32), cache

        return jax.lax.fori_loop(0, reps, body, (jnp.zeros((rows,), jnp.int32), cache))[0]

    cache = prefill(params, prefix, spk)
    out = {}
    for fill in np.linspace(0, n - reps, points).astype(int):
        jax.block_until_ready(run(params, cache, jnp.int32(fill)))
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            jax.block_until_ready(run(params, cache, jnp.int32(fill)))
            ts.append(time.perf_counter() - t)
        out[f"decode_b{rows}_ms_per_step@slot{s0 + fill}"] = 1e3 * min(ts) / reps
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="small", help="tiny | small | base, or a config file")
    ap.add_argument("--impl", default=None, help="attention implementation (default: the config's)")
    ap.add_argument("--steps", type=int, default=10, help="timed train steps (0: decoding only)")
    ap.add_argument("--bucket-seconds", type=float, default=2.4)
    ap.add_argument("--text-vocab", type=int, default=1024, help="when the config says 0 (the corpus's BPE)")
    ap.add_argument("--codebook", type=int, default=1024, help="when the config says 0 (the tokenizer's)")
    ap.add_argument("--decode-tokens", type=int, default=200)
    ap.add_argument("--decode-batches", default="1,16", help="comma separated; empty: skip decoding")
    ap.add_argument("--sample", action="store_true", help="top-k/top-p sampling instead of greedy")
    ap.add_argument("--peak-n", type=int, default=1024, help="side of the square matmul for the peak")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: glibc keeps freed memory mapped (see the module docstring); script use only")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args, rest = ap.parse_known_args(argv)
    config = load_config(CONFIGS.get(args.config, args.config))
    config = apply_overrides(config, rest)
    with config.unlocked():
        if args.impl:
            config.model.attention_impl = args.impl
        if not config.model.text_vocab_size:
            config.model.text_vocab_size = args.text_vocab
        if not config.model.codebook_size:
            config.model.codebook_size = args.codebook

    shapes = batch_shapes(config, args.bucket_seconds)
    batch = synthetic_batch(config, shapes)
    res = {"config": args.config, "device": jax.devices()[0].device_kind, "attention_impl":
           config.model.attention_impl, "dtype": config.model.dtype, "batch_size": config.data.batch_size,
           "shapes": {k: list(v) for k, v in shapes.items()}, "malloc_kept": MALLOC_KEPT}
    seq = task.layout_length(shapes, config.model.get("pack_prompt_slots", -1))
    res["padding_fraction_targets"] = 1 - float(np.sum(batch["tokens_len"])) / np.prod(shapes["tokens"])
    zero_shot = 3 + batch["text_len"] + batch["tokens_len"]  # slots a row fills, one-shot where its prompt fits
    one_shot = zero_shot + batch["prompt_text_len"] + batch["prompt_tokens_len"]
    res["padding_fraction_layout"] = 1 - float(np.mean(np.where(one_shot <= seq, one_shot, zero_shot) / seq))
    res["load_before"] = os.getloadavg()[0]
    if args.steps:
        r = bench_train(config, batch, args.steps, args.peak_n)
        peak = r.pop("peak")
        graphdef, params = r.pop("graphdef"), r.pop("state").params
        res.update(r)
        flops = task.flops_per_step(config, shapes)
        flops_full = full_attention_flops(config, shapes)
        dt = r["step_time_s"]
        res.update(matmul_peak_gflops=peak / 1e9, gflops_per_step=flops / 1e9,
                   gflops_per_step_full_attention=flops_full / 1e9,
                   target_tokens_per_s=float(np.sum(batch["tokens_len"])) / dt,
                   mfu=flops / dt / peak, mfu_full_attention=flops_full / dt / peak,
                   mfu_best_step=flops / r["step_time_min_s"] / peak)
    else:  # decoding only, with freshly initialised weights
        graphdef, params = nnx.split(task.build_model(config, nnx.Rngs(config.train.seed)))
    for rows in [int(x) for x in args.decode_batches.split(",") if x]:
        res.update(bench_generate(graphdef, params, config, batch, rows, args.decode_tokens, not args.sample))
        res.update(bench_step_latency(graphdef, params, config, batch, rows, args.decode_tokens))
    res["peak_rss_gb"] = peak_memory_bytes() / 2**30
    res["load_after"] = os.getloadavg()[0]
    print_results(res, args.out)
    return res


if __name__ == "__main__":
    main()
