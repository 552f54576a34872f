"""Ahead-of-time compilation of a stage's train step for a topology this host need not have.

The program is the training loop's own (`train/program.py`: same shardings, donation, scan and remat);
only the devices differ: a TPU topology described by libtpu (`v5p:4x4x4`), or the host's CPU devices
(`cpu:8`). The compiled program tells what one chip holds (memory analysis) and computes (cost analysis).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from data_pipelines.pipeline import PadBatch, bucket_lengths, device_fields, prompt_max_tokens
from speech_jax import sharding
from speech_jax.chips import CHIPS, Chip, chip_for
from speech_jax.sharding_report import Row, human, sharding_report, totals
from speech_jax.train.program import build_program, resolve_config


class DoesNotFit(RuntimeError):
    """The step needs more memory per chip than the chip has."""


def topology_devices(topology: str) -> list:
    """`cpu` / `cpu:N`: the host's CPU devices; otherwise a TPU topology name such as `v5p:4x4x4`."""
    if topology == "cpu" or topology.startswith("cpu:"):
        devices = jax.devices("cpu")
        n = int(topology.split(":", 1)[1]) if ":" in topology else len(devices)
        if len(devices) < n:
            raise ValueError(f"topology {topology} needs {n} CPU devices but the host has {len(devices)}; "
                             f"set XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting")
        return devices[:n]
    from jax.experimental import topologies
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
    except Exception as e:  # libtpu missing, or a name it does not know
        raise ValueError(f"cannot describe TPU topology {topology!r}: {e}. TPU topologies need libtpu "
                         "(pip install 'speech_jax[tpu]'); names look like v5e:2x2, v5p:4x4x4, v6e:4x4") from e


def abstract_batch(config, batch_shardings: dict) -> dict:
    """The largest batch the loop feeds (longest bucket, full text and prompt lengths), as shapes.

    One example goes through the pipeline's own padding, so shapes and dtypes cannot drift from it."""
    data = config.data
    frame_multiple = 2 * config.mel.hop_length
    bucket = bucket_lengths(data.buckets_seconds, data.sample_rate, frame_multiple)[-1]
    ref_len = (bucket_lengths((data.ref_seconds[1],), data.sample_rate, frame_multiple)[0]
               if data.with_reference else None)
    prompt = prompt_max_tokens(data, frame_multiple)
    n_tok = bucket // frame_multiple
    example = {"audio": np.zeros(bucket, np.float32), "text_ids": np.zeros(data.max_text_len, np.int32),
               "index": 0, "speaker_id": 0}
    if ref_len is not None:
        example.update(ref_audio=np.zeros(ref_len, np.float32), ref_index=0)
    if data.extracted:
        example["tokens"] = np.zeros(n_tok, np.int32)
    if data.with_latents:
        example["latents"] = np.zeros((2 * n_tok, int(config.model.latent_dim)), np.float32)
    if data.with_prompt:
        example.update(prompt_text_ids=np.zeros(data.max_text_len, np.int32), prompt_tokens=np.zeros(prompt, np.int32))
    pad = PadBatch((bucket,), ref_len, data.max_text_len, frame_multiple=frame_multiple, prompt_tokens=prompt)
    one = pad([example])
    return {k: jax.ShapeDtypeStruct((data.batch_size, *one[k].shape[1:]), one[k].dtype, sharding=batch_shardings[k])
            for k in device_fields(data)}


@dataclasses.dataclass
class CompileResult:
    stage: str
    topology: str
    device_kind: str
    num_chips: int
    mesh: dict
    chip: Chip | None
    memory: dict            # per chip: parameters, optimizer, ema, batch, temporaries, outputs, aliased, code, total
    flops: float            # per chip, the compiled program's cost analysis
    model_flops: float      # per chip, the task's analytic count (3 x forward matmuls)
    bytes_accessed: float   # per chip, cost analysis
    rows: list[Row]         # the sharding report
    seconds: float          # lowering + compiling

    @property
    def step_time_bound(self) -> tuple[float, float] | None:
        """(compute-bound, HBM-bound) seconds per step at the chip's peaks; the step takes at least the max."""
        if self.chip is None:
            return None
        # XLA's cost analysis counts a loop body once (scan over layers): the analytic count can be larger.
        flops = max(self.flops, self.model_flops)
        return flops / self.chip.peak_flops, self.bytes_accessed / self.chip.hbm_bytes_per_s


def compile_step(config, topology: str, chip: str | None = None, hbm_fraction: float = 1.0) -> CompileResult:
    """Lowers and compiles `config`'s train step for `topology`; raises DoesNotFit when the step needs more
    than `hbm_fraction` of a chip's HBM. `chip` (a key of speech_jax.chips.CHIPS) replaces the topology's
    own, e.g. to hold host-device compiles to an accelerator's budget."""
    target = chip_for(chip or topology)
    if chip and target is None:
        raise ValueError(f"unknown chip {chip!r}; known: {', '.join(CHIPS)}")
    chip = target
    devices = topology_devices(topology)
    resolve_config(config, corpus=False)
    program = build_program(config, devices)
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         program.abstract_state, program.state_shardings)
    batch = abstract_batch(config, program.batch_shardings)
    rng = jax.eval_shape(lambda: jax.random.key(0))
    replicated = jax.sharding.NamedSharding(program.mesh, jax.sharding.PartitionSpec())
    rng = jax.ShapeDtypeStruct(rng.shape, rng.dtype, sharding=replicated)
    min_bytes = int(config.sharding.get("fsdp_min_bytes", sharding.FSDP_MIN_BYTES))
    rows = sharding_report(program.abstract_state, program.state_shardings, min_bytes)
    t0 = time.perf_counter()
    try:
        with sharding.activation_rules(program.mesh, program.rules):
            compiled = program.train_step.lower(state, batch, rng).compile()
    except Exception as e:  # the TPU compiler refuses programs that exceed HBM
        if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
            raise DoesNotFit(f"{config.stage} on {topology}: the compiler ran out of HBM "
                             f"({str(e).splitlines()[0][:400]}).\n{_biggest(rows)}") from e
        raise
    seconds = time.perf_counter() - t0
    n = len(devices)
    t = totals(rows)
    state_per_chip = t["all"]["bytes_per_device"]
    mem = compiled.memory_analysis()
    args, out = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
    alias, temp = int(mem.alias_size_in_bytes), int(mem.temp_size_in_bytes)
    code = int(getattr(mem, "generated_code_size_in_bytes", 0) or 0)
    per_chip = {part: t.get(part, {}).get("bytes_per_device", 0)
                for part in ("params", "rest", "opt_state", "ema")}
    memory = {"parameters": per_chip["params"] + per_chip["rest"], "optimizer": per_chip["opt_state"],
              "ema": per_chip["ema"],
              "batch": max(args - state_per_chip, 0), "temporaries": temp, "outputs": out, "aliased": alias,
              "code": code, "total": args + out - alias + temp + code}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    shapes = {k: v.shape for k, v in batch.items()}
    result = CompileResult(
        stage=config.stage, topology=topology, device_kind=devices[0].device_kind, num_chips=n,
        mesh=dict(program.mesh.shape), chip=chip, memory=memory, flops=float(cost.get("flops", 0.0)),
        model_flops=float(program.task.flops_per_step(config, shapes)) / n,
        bytes_accessed=float(cost.get("bytes accessed", 0.0)), rows=rows, seconds=seconds)
    if chip is not None and memory["total"] > hbm_fraction * chip.hbm_bytes:
        raise DoesNotFit(f"{config.stage} on {topology} needs {human(memory['total'])} per chip, more than "
                         f"{100 * hbm_fraction:.0f} % of the {human(chip.hbm_bytes)} HBM of a {chip.name}.\n"
                         f"{_consumers(memory)}\n{_biggest(rows)}")
    return result


def _consumers(memory: dict) -> str:
    parts = {k: v for k, v in memory.items() if k not in ("total", "aliased", "outputs")}
    parts["outputs not donated"] = memory["outputs"] - memory["aliased"]
    parts = sorted(parts.items(), key=lambda kv: -kv[1])
    return "biggest consumers per chip: " + ", ".join(f"{k} {human(v)}" for k, v in parts)


def _biggest(rows: list[Row], count: int = 5) -> str:
    top = sorted(rows, key=lambda r: -r.bytes_per_device)[:count]
    return "largest tensors per chip: " + ", ".join(f"{r.path} {r.shape} {human(r.bytes_per_device)}" for r in top)


def format_result(r: CompileResult) -> str:
    m = r.memory
    lines = [f"{r.stage} train step compiled for {r.topology}: {r.num_chips} x {r.device_kind}, mesh {r.mesh} "
             f"({r.seconds:.1f} s)", "per chip:"]
    for key, label in (("parameters", "parameters (+ non-trained state)"), ("optimizer", "optimizer state"),
                       ("ema", "weights' moving average"), ("batch", "batch"),
                       ("temporaries", "activations / temporaries"),
                       ("outputs", "outputs"), ("aliased", "  of which donated (aliased)"), ("code", "program"),
                       ("total", "total")):
        lines.append(f"  {label:<34} {human(m[key]):>12}")
    if r.chip is not None:
        share = 100 * m["total"] / r.chip.hbm_bytes
        lines[-1] += f"  of {human(r.chip.hbm_bytes)} HBM ({share:.1f} %) on a {r.chip.name}"
    lines.append(f"  FLOPs per step per chip: {r.flops:.4g} compiled (a loop body counts once), "
                 f"{r.model_flops:.4g} model (3 x forward matmuls)")
    bound = r.step_time_bound
    if bound is not None:
        compute, memory = bound
        lines.append(f"  roofline: {1e3 * compute:.3g} ms for the larger FLOP count at {r.chip.peak_flops / 1e12:.0f} "
                     f"TFLOP/s, {1e3 * memory:.3g} ms for {human(r.bytes_accessed)} accessed at "
                     f"{r.chip.hbm_bytes_per_s / 1e9:.0f} GB/s -> a step takes at least {1e3 * max(bound):.3g} ms")
    return "\n".join(lines)
