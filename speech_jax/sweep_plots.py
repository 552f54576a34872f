"""A sweep's compared curves: one PNG per metric, a line per trial (mean over its seeds), the seeds'
range shaded, so that trials read against each other over training, not only at the end."""
from __future__ import annotations

import os

import numpy as np

from speech_jax import sweep as sweep_lib


def plot_curves(sweep: sweep_lib.Sweep, done: list, directory: str) -> list[str]:
    """done: sweep_table.Done of the finished runs. Returns the PNGs written."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display on a training host
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    for metric in sweep.curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        drawn = 0
        for trial in sweep.trials:
            curves = [dict(d.history[metric]) for d in done if d.run.trial == trial and d.history.get(metric)]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))  # the steps every seed logged
            if not steps:
                continue
            values = np.array([[c[s] for s in steps] for c in curves])
            line, = ax.plot(steps, values.mean(0), label=f"{sweep_lib.label(trial)} (n={len(curves)})")
            if len(curves) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
            drawn += 1
        if drawn:
            ax.set_xlabel("step")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            path = os.path.join(directory, metric.replace("/", "_") + ".png")
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            written.append(path)
        plt.close(fig)
    return written
