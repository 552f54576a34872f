"""Runs a sweep's runs one after another, each in its own workdir `OUT/<run name>`, resumably.

A run is finished when `OUT/<run>/sweep_run.json` exists: written only after training reached
`train.steps` and every evaluation wrote its results, so a finished run is skipped and an interrupted one
(killed, pre-empted, out of `train.max_minutes`) resumes from its last checkpoint through the loop's own
resume. The marker records the overrides; a run directory made by different overrides is an error, not a
silent reuse.
"""
from __future__ import annotations

import json
import logging
import os
import time

from speech_jax import sweep as sweep_lib

MARKER = "sweep_run.json"
# Overrides that say how a run is executed, not what it computes: a finished run stays finished when
# they change (another data mount on the cluster, a job's time budget).
NOT_COMPARED = ("train.max_minutes", "data.data_dir", "data.bpe_model", "data.num_workers", "data.prefetch",
                "train.async_checkpointing", "train.profile")


def read_marker(workdir: str) -> dict | None:
    path = os.path.join(workdir, MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def run_one(sweep: sweep_lib.Sweep, run: sweep_lib.Run, out: str, extra: list[str], params: dict) -> dict:
    """Trains (or resumes) one run and runs its evaluations. Returns its marker, with "status":
    "skipped" (finished before), "finished", or "incomplete" (stopped early; run again to resume)."""
    from speech_jax.config import apply_overrides, load_config
    from speech_jax.train.loop import train

    workdir = os.path.join(out, run.name)
    overrides = run.overrides(sweep, extra)
    done = read_marker(workdir)
    if done is not None:
        if _compared(done["overrides"]) != _compared(overrides):
            raise sweep_lib.SweepError(f"{workdir} holds a run with other overrides ({done['overrides']}); "
                                       "delete it or give another --out")
        return {**done, "status": "skipped"}
    config = apply_overrides(load_config(sweep_lib.base_path(sweep)), overrides)
    t = time.perf_counter()
    result = train(config, workdir)
    if result.get("preempted") or result.get("time_budget_reached") or result["step"] < config.train.steps:
        return {"status": "incomplete", "step": result["step"]}
    evaluations = {}
    values = {**sweep.params, **params, "seed": run.seed, "workdir": workdir}
    for ev in sweep.evaluations:
        evaluations[ev.name] = _evaluate(ev, values, os.path.join(workdir, "sweep_eval", ev.name))
    marker = {"index": run.index, "trial": run.trial, "seed": run.seed, "overrides": overrides, "extra": list(extra),
              "base": sweep.base, "step": int(config.train.steps), "evaluations": evaluations,
              "wall_s": round(time.perf_counter() - t, 2)}
    import jax
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, MARKER), marker)
    return {**marker, "status": "finished"}


def _compared(overrides: list[str]) -> dict[str, str]:
    """Overrides as {key: value}, the later winning, without NOT_COMPARED keys."""
    pairs = (o[len("--config."):].split("=", 1) for o in overrides)
    return {k: v for k, v in pairs if k not in NOT_COMPARED}


def _evaluate(ev: sweep_lib.Evaluation, values: dict, out: str) -> dict:
    """Runs the `speech-jax` command in this process (its results file, if present, is reused)."""
    path = os.path.join(out, ev.results)
    if not os.path.exists(path):
        from speech_jax.cli import main
        argv = sweep_lib.format_argv(ev, {**values, "out": out})
        logging.info("sweep evaluation %s: speech-jax %s", ev.name, " ".join(argv))
        rc = main(argv)
        if rc != 0 or not os.path.exists(path):
            raise sweep_lib.SweepError(f"evaluation {ev.name!r} (speech-jax {' '.join(argv)}) failed "
                                       f"(exit {rc}) or wrote no {ev.results}")
    with open(path) as f:
        data = json.load(f)
    if ev.key is not None:
        data = data[ev.key]
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_sweep(sweep: sweep_lib.Sweep, out: str, *, only: list[int] | None = None, extra: list[str] = (),
              params: dict | None = None, log=print) -> list[dict]:
    """Runs the selected runs (all by default) in order, a progress line each; stops at an incomplete one."""
    all_runs = sweep_lib.runs(sweep)
    chosen = all_runs if not only else [_pick(all_runs, i) for i in only]
    os.makedirs(out, exist_ok=True)
    results = []
    for k, run in enumerate(chosen, 1):
        head = f"[sweep {k}/{len(chosen)}] run {run.index} ({sweep_lib.label(run.trial)}, seed {run.seed})"
        logging.info("%s: in %s", head, os.path.join(out, run.name))
        t = time.perf_counter()
        r = run_one(sweep, run, out, list(extra), params or {})
        results.append(r)
        if r["status"] == "incomplete":
            log(f"{head}: stopped at step {r['step']}; run the same command again to resume")
            break
        log(f"{head}: {r['status']} ({time.perf_counter() - t:.1f} s) {_headline(sweep, out, run)}")
    return results


def _headline(sweep: sweep_lib.Sweep, out: str, run: sweep_lib.Run) -> str:
    """The run's first few tabulated metrics, for the progress line."""
    from speech_jax.sweep_table import run_metrics
    metrics = run_metrics(os.path.join(out, run.name))
    return " ".join(f"{k}={metrics[k]:.4g}" for k in sweep.metrics[:4] if k in metrics)


def _pick(all_runs, i: int):
    if not 0 <= i < len(all_runs):
        raise sweep_lib.SweepError(f"--trial {i}: the sweep has runs 0..{len(all_runs) - 1}")
    return all_runs[i]


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)  # a reader never sees half a file
