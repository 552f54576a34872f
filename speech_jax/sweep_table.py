"""Collects a sweep's finished runs into one table: a row per trial, mean ± standard deviation over seeds.

A run's metrics are the last value of every key in its `metrics.jsonl` (training keys from the last
logged step, `eval/…` keys from the last evaluation; a resumed run's repeated steps count once, the later
row winning) plus its evaluations' results as `<evaluation>/<metric>`.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os

import numpy as np

from speech_jax import sweep as sweep_lib
from speech_jax.sweep_run import read_marker


def history(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] sorted by step, one value a step (the last written: a resumed run repeats
    the steps between its last checkpoint and the interruption)."""
    path = os.path.join(workdir, "metrics.jsonl")
    by_key: dict[str, dict[int, float]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                for k, v in row.items():
                    if k != "step":
                        by_key.setdefault(k, {})[int(row["step"])] = float(v)
    return {k: sorted(v.items()) for k, v in by_key.items()}


@dataclasses.dataclass
class Done:
    """A finished run: its final metrics, its curves, and its marker (sweep_run.py)."""
    run: sweep_lib.Run
    metrics: dict[str, float]
    history: dict[str, list[tuple[int, float]]]
    marker: dict


def finished(sweep: sweep_lib.Sweep, out: str) -> list[Done]:
    """Every run of the sweep whose marker is in `out`, in the sweep's order."""
    found = []
    for run in sweep_lib.runs(sweep):
        workdir = os.path.join(out, run.name)
        marker = read_marker(workdir)
        if marker is not None:
            curves = history(workdir)
            found.append(Done(run, run_metrics(workdir, curves, marker), curves, marker))
    return found


def run_metrics(workdir: str, curves: dict | None = None, marker: dict | None = None) -> dict[str, float]:
    """A finished run's final value of every metric, its evaluations' as `<evaluation>/<metric>`."""
    curves = history(workdir) if curves is None else curves
    marker = read_marker(workdir) or {} if marker is None else marker
    metrics = {k: v[-1][1] for k, v in curves.items() if v}
    for name, values in marker.get("evaluations", {}).items():
        metrics.update({f"{name}/{k}": v for k, v in values.items()})
    return metrics


def table(sweep: sweep_lib.Sweep, done: list[Done]) -> list[dict]:
    """One row per trial with a finished run: its axis values, the seeds it has, and per metric
    (mean, standard deviation over seeds (ddof 1; NaN with one seed), count)."""
    rows = []
    for trial in sweep.trials:
        mine = [(d.run, d.metrics) for d in done if d.run.trial == trial]
        if not mine:
            continue
        row = {"trial": sweep_lib.label(trial), "axes": {k: trial.get(k) for k in sweep_lib.axes(sweep)},
               "seeds": [r.seed for r, _ in mine], "metrics": {}}
        for key in sweep.metrics:
            vals = np.array([m[key] for _, m in mine if key in m and math.isfinite(m[key])], dtype=float)
            std = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row["metrics"][key] = (float(vals.mean()) if len(vals) else math.nan, std, len(vals))
        rows.append(row)
    return rows


def _num(v: float, digits: int = 4) -> str:
    return "–" if not math.isfinite(v) else f"{v:.{digits}g}"


def markdown(sweep: sweep_lib.Sweep, rows: list[dict], total_runs: int) -> str:
    ax = sweep_lib.axes(sweep)
    head = [*ax, "seeds", *sweep.metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [sweep_lib._literal(row["axes"][k]) for k in ax] + [str(len(row["seeds"]))]
        for key in sweep.metrics:
            mean, std, n = row["metrics"][key]
            cells.append(_num(mean) + (f" ± {_num(std, 2)}" if n > 1 else ""))  # spread: 2 digits are plenty
        lines.append("| " + " | ".join(cells) + " |")
    done = sum(len(r["seeds"]) for r in rows)
    lines += ["", f"{done} of {total_runs} runs finished; mean ± standard deviation over seeds "
              f"(seeds set {', '.join(sweep.seed_keys)}); – where a run logged no such metric."]
    return "\n".join(lines) + "\n"


def csv_text(sweep: sweep_lib.Sweep, rows: list[dict]) -> str:
    ax = sweep_lib.axes(sweep)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*ax, "seeds", *(f"{k}{s}" for k in sweep.metrics for s in ("", "_std", "_n"))])
    for row in rows:
        vals = [v for k in sweep.metrics for v in row["metrics"][k]]
        w.writerow([*(row["axes"][k] for k in ax), " ".join(map(str, row["seeds"])), *vals])
    return buf.getvalue()


def collect(sweep: sweep_lib.Sweep, out: str, sweep_path: str = "") -> dict:
    """Writes OUT/sweep.md (the table, plots linked), OUT/sweep.csv, OUT/plots/*.png and the runs' HParams
    summaries from whatever has finished; returns {"rows", "finished", "runs", "markdown", "csv", "plots"}."""
    from speech_jax.sweep_hparams import write_hparams
    from speech_jax.sweep_plots import plot_curves

    done = finished(sweep, out)
    total = len(sweep_lib.runs(sweep))
    rows = table(sweep, done)
    os.makedirs(out, exist_ok=True)
    plots = plot_curves(sweep, done, os.path.join(out, "plots"))
    write_hparams(sweep, out, done)
    title = os.path.splitext(os.path.basename(sweep_path))[0] if sweep_path else "sweep"
    text = [f"# Sweep {title}", ""]
    if sweep.description:
        text += [sweep.description, ""]
    text += [f"Base config `{sweep.base}`" + (f", common overrides `{sweep.common}`" if sweep.common else "")
             + f"; seeds {list(sweep.seeds)}.", ""]
    # The budget as run: command-line overrides (they win over the sweep's) and time per run.
    for extra in dict.fromkeys(" ".join(d.marker["extra"]) for d in done if "extra" in d.marker):
        text += [f"Command-line overrides: `{extra or '(none)'}`."]
    if done:
        walls = [d.marker.get("wall_s", math.nan) for d in done]
        text += [f"Wall time of the invocation that finished each run (training from its last checkpoint, "
                 f"evaluations): {np.mean(walls):.0f} s mean, {np.sum(walls):.0f} s in all.",
                 ""]
    text += [markdown(sweep, rows, total)]
    text += [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plots]
    paths = {"markdown": os.path.join(out, "sweep.md"), "csv": os.path.join(out, "sweep.csv")}
    for key, body in (("markdown", "\n".join(text) + "\n"), ("csv", csv_text(sweep, rows))):
        tmp = paths[key] + ".tmp"
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, paths[key])  # cluster jobs may collect at once: never half a file
    return {"rows": rows, "finished": len(done), "runs": total, "plots": plots, **paths}
