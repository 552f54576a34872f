"""The largest global batch whose train step fits a share of a chip's HBM, found with few compiles.

A step's memory per chip is close to affine in the global batch: state and program are fixed, while the
batch, activations and temporaries grow with the examples each chip holds. Two compiles (the config's batch
and twice it) draw the line; the batch it predicts is compiled, and so is the next multiple of the batch's
granularity (the data x fsdp mesh), the line redrawn through each new point, until a batch that fits sits
next to one that does not. What is reported was compiled, not predicted: typically four or five compiles.
"""
from __future__ import annotations

import dataclasses
import math

from speech_jax import sharding
from speech_jax.chips import chip_for
from speech_jax.train.aot import CompileResult, DoesNotFit, compile_step, topology_devices


@dataclasses.dataclass
class Probe:
    batch: int
    total: int | None       # bytes per chip; None when the compiler ran out of HBM
    seconds: float


@dataclasses.dataclass
class BatchFit:
    batch: int              # the largest compiled global batch that fits
    result: CompileResult   # its compile
    budget: float           # bytes per chip allowed
    fixed: float            # the line: total(b) = fixed + per_example * b
    per_example: float
    probes: list[Probe]
    next_does_not_fit: bool  # the next multiple of the batch's granularity was compiled and does not fit


def granularity(config, topology: str) -> int:
    """Global batches are multiples of the data x fsdp mesh size (times the accumulation steps)."""
    sizes = sharding.mesh_shape(config.mesh, len(topology_devices(topology)))
    return sizes["data"] * sizes["fsdp"] * int(config.train.get("grad_accum_steps", 1))


def _compile(config, batch: int, topology: str, chip: str | None):
    config = config.copy_and_resolve_references()
    config.data.batch_size = batch
    try:
        return compile_step(config, topology, chip=chip, hbm_fraction=math.inf)
    except DoesNotFit:  # the compiler itself refused the program
        return None


def _line(a: CompileResult, batch_a: int, b: CompileResult, batch_b: int) -> tuple[float, float]:
    """(fixed bytes, bytes per example of the global batch) through two compiles."""
    per_example = max((b.memory["total"] - a.memory["total"]) / (batch_b - batch_a), 1.0)
    return a.memory["total"] - per_example * batch_a, per_example


def fit_batch(config, topology: str, chip: str | None = None, hbm_fraction: float = 0.85,
              max_compiles: int = 6, log=print) -> BatchFit:
    """Searches the largest `data.batch_size` whose step needs at most `hbm_fraction` of the chip's HBM."""
    target = chip_for(chip or topology)
    if target is None:
        raise ValueError(f"{topology} names no accelerator: give --chip (v5e, v5p, v6e, h100, h200)")
    budget = hbm_fraction * target.hbm_bytes
    step = granularity(config, topology)
    probes: list[Probe] = []
    fits: dict[int, CompileResult] = {}

    def probe(batch: int) -> CompileResult | None:
        r = _compile(config, batch, topology, chip)
        probes.append(Probe(batch, None if r is None else r.memory["total"], 0.0 if r is None else r.seconds))
        total = "out of HBM" if r is None else f"{r.memory['total'] / 2 ** 20:.1f} MiB"
        log(f"  batch {batch}: {total} per chip (budget {budget / 2 ** 20:.1f} MiB)")
        if r is not None and r.memory["total"] <= budget:
            fits[batch] = r
        return r

    b0 = max(step, int(config.data.batch_size) // step * step)
    first = probe(b0)
    while b0 not in fits:  # halve until a batch fits
        if len(probes) >= max_compiles or b0 == step:
            raise DoesNotFit(f"{config.stage} on {topology}: no global batch down to {b0} fits "
                             f"{100 * hbm_fraction:.0f} % of a {target.name}'s HBM")
        b0 = max(step, b0 // 2 // step * step)
        first = probe(b0)
    second = probe(2 * b0)
    lo = max(fits)                                             # the largest batch that fits so far
    hi = None if 2 * b0 in fits else 2 * b0                    # the smallest known not to fit
    line = None if second is None else _line(first, b0, second, 2 * b0)
    while len(probes) < max_compiles and (hi is None or hi - lo > step):
        if line is not None:  # the largest multiple of `step` under the budget on the line
            guess = int((budget - line[0]) / line[1]) // step * step
        else:                 # the compiler refused a batch: bisect
            guess = (lo + hi) // 2 // step * step
        guess = max(guess, lo + step)  # the line's own answer is checked by compiling the next multiple
        if hi is not None:
            guess = min(guess, hi - step)
        r = probe(guess)
        if guess in fits:
            lo = guess
        else:
            hi = guess
        if r is not None:  # draw the line through the newest point
            line = _line(first, b0, r, guess)
    fixed, per_example = line if line is not None else (float(first.memory["total"]), math.inf)
    return BatchFit(batch=lo, result=fits[lo], budget=budget, fixed=fixed, per_example=per_example, probes=probes,
                    next_does_not_fit=hi is not None and hi - lo <= step)


def format_fit(fit: BatchFit) -> str:
    r = fit.result
    per_chip = fit.batch / r.num_chips
    line = (f"largest global batch that fits: {fit.batch} ({per_chip:g} per chip), "
            f"{r.memory['total'] / 2 ** 30:.2f} GiB of the {fit.budget / 2 ** 30:.2f} GiB budget per chip")
    if fit.per_example < math.inf:
        line += (f"; memory per chip ~ {fit.fixed / 2 ** 30:.2f} GiB + {fit.per_example / 2 ** 20:.1f} MiB "
                 f"per example of the global batch")
    line += "; the next larger batch does not fit" if fit.next_does_not_fit else "; not checked: compile limit reached"
    return line + f" ({len(fit.probes)} compiles, {sum(p.seconds for p in fit.probes):.0f} s)"
