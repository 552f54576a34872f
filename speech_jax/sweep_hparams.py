"""TensorBoard HParams summaries for a sweep's runs, so `tensorboard --logdir OUT` lines the trials up.

Each finished run's `tensorboard/` directory (where the loop wrote its training curves) gets one more
event file: the HParams experiment, session start (the run's axis values and seed) and end, and its final
metrics as scalars tagged `sweep/<metric>`. Collecting again replaces that file, never the loop's.
"""
from __future__ import annotations

import glob
import math
import os

from speech_jax import sweep as sweep_lib

SUFFIX = ".sweep_hparams"


def hparam_values(sweep: sweep_lib.Sweep, run: sweep_lib.Run) -> dict:
    """The run's axis values and seed, as HParams takes them (bool, int, float or str)."""
    out = {}
    for k in sweep_lib.axes(sweep):
        v = run.trial.get(k)
        out[k] = v if isinstance(v, (bool, int, float, str)) else sweep_lib._literal(v)
    out["seed"] = run.seed
    return out


def write_hparams(sweep: sweep_lib.Sweep, out: str, done: list) -> list[str]:
    """done: sweep_table.Done of the finished runs. Returns the event files written."""
    from tensorboardX import FileWriter
    from tensorboardX.summary import hparams, scalar

    written = []
    for d in done:
        run, metrics = d.run, d.metrics
        logdir = os.path.join(out, run.name, "tensorboard")
        os.makedirs(logdir, exist_ok=True)
        for old in glob.glob(os.path.join(logdir, f"*{SUFFIX}")):
            os.remove(old)
        # Every session declares the same metric columns (missing values are just absent).
        values = {f"sweep/{k}": metrics[k] for k in sweep.metrics if k in metrics and math.isfinite(metrics[k])}
        exp, ssi, sei = hparams(hparam_values(sweep, run), {f"sweep/{k}": 0.0 for k in sweep.metrics})
        writer = FileWriter(logdir, filename_suffix=SUFFIX)
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)
        step = int(d.marker.get("step", 0))
        for tag, v in values.items():
            writer.add_summary(scalar(tag, v), step)
        writer.close()
        written += glob.glob(os.path.join(logdir, f"*{SUFFIX}"))
    return written
