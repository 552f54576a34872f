"""Sweep files: a base config, the compared trials (override sets), seeds, and what to tabulate.

A sweep is a Python file (`experiments/sweeps/*.py`) whose `get_sweep()` returns a `Sweep`. Its runs are
every trial × every seed, in that order; `--trial i` of `speech-jax sweep` indexes this list. A run's
overrides apply in this order: base config, `common`, the trial's, the seed, then the command line's
`--config.k=v` (last, so a user can shrink every run, e.g. `--config.train.steps=2`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
from typing import Any

from speech_jax.config import load_python_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SweepError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Named:
    """An axis value that stands for several overrides under one name, e.g. a model size:
    {"size": Named("d64", {"model.d_model": 64, "model.mlp_dim": 128})}; tables and run names show "size=d64"."""
    name: str
    overrides: dict

    def __str__(self):
        return self.name


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A `speech-jax` command run on a trained run, e.g. `evaluate` (SIM, judge CER) or `validate`.

    `argv` items are formatted with `{workdir}` (the run's), `{out}` (this evaluation's output directory),
    `{seed}` and the sweep's `params`; the command writes `results` (JSON) under `{out}`, and the numbers
    under `key` in it (`None`: the top level) become the run's metrics `<name>/<metric>`."""
    name: str
    argv: tuple[str, ...]
    results: str = "results.json"
    key: str | None = "means"


@dataclasses.dataclass(frozen=True)
class Sweep:
    base: str                                  # config file, relative to the repository root or absolute
    trials: tuple[dict, ...]                   # the compared settings: {"model.use_flow": False, ...}
    metrics: tuple[str, ...]                   # table columns: training keys, "eval/…" keys, "<evaluation>/…"
    seeds: tuple[int, ...] = (0,)              # every trial runs once per seed
    seed_keys: tuple[str, ...] = ("train.seed",)  # the fields a seed sets
    common: dict = dataclasses.field(default_factory=dict)  # overrides of every run
    curves: tuple[str, ...] = ("loss",)        # metrics plotted against the step, one line per trial
    evaluations: tuple[Evaluation, ...] = ()
    params: dict = dataclasses.field(default_factory=dict)  # evaluation placeholders; --param k=v sets them
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Run:
    index: int
    trial: dict   # the trial's overrides (without the seed)
    seed: int
    name: str     # its directory under the sweep's output; from the overrides, so reordering trials is safe

    def overrides(self, sweep: Sweep, extra: list[str] = ()) -> list[str]:
        trial = {}
        for k, v in self.trial.items():  # a Named value's overrides stand in for its axis
            trial.update(v.overrides if isinstance(v, Named) else {k: v})
        values = {**sweep.common, **trial, **{k: self.seed for k in sweep.seed_keys}}
        return [f"--config.{k}={_literal(v)}" for k, v in values.items()] + list(extra)


def product(axes: dict[str, list]) -> tuple[dict, ...]:
    """Every combination of the axes' values: product({"a": [1, 2], "b": [3]}) -> ({a: 1, b: 3}, {a: 2, b: 3})."""
    keys = list(axes)
    return tuple(dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys)))


def runs(sweep: Sweep) -> list[Run]:
    out = []
    for trial in sweep.trials:
        for seed in sweep.seeds:
            out.append(Run(len(out), dict(trial), seed, run_name(trial, seed)))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise SweepError("two runs of the sweep have the same overrides and seed")
    return out


def run_name(trial: dict, seed: int) -> str:
    text = "__".join(f"{k}={_literal(v)}" for k, v in trial.items()) + f"__seed={seed}"
    text = re.sub(r"[^A-Za-z0-9._=-]+", "-", text.lstrip("_"))
    if len(text) > 120:  # file-name limits; the hash keeps it unique
        text = text[:100] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return text


def label(trial: dict) -> str:
    return ", ".join(f"{k}={_literal(v)}" for k, v in trial.items()) or "base"


def axes(sweep: Sweep) -> list[str]:
    """The override keys whose values differ between trials: the table's leading columns."""
    keys = list(dict.fromkeys(k for t in sweep.trials for k in t))
    return [k for k in keys if len({_literal(t.get(k)) for t in sweep.trials}) > 1] or keys


def base_path(sweep: Sweep) -> str:
    if os.path.isabs(sweep.base) or os.path.exists(sweep.base):
        return sweep.base
    return os.path.join(ROOT, sweep.base)


def load_sweep(path: str) -> Sweep:
    if not os.path.isfile(path):
        raise SweepError(f"sweep file {path!r} does not exist")
    module = load_python_file(path, "_sweep", (ROOT, os.getcwd()))
    if not hasattr(module, "get_sweep"):
        raise SweepError(f"{path} has no get_sweep()")
    sweep = module.get_sweep()
    if not isinstance(sweep, Sweep):
        raise SweepError(f"{path}: get_sweep() must return a speech_jax.sweep.Sweep")
    if not sweep.trials or not sweep.seeds:
        raise SweepError(f"{path}: a sweep needs at least one trial and one seed")
    if not sweep.description and module.__doc__:
        sweep = dataclasses.replace(sweep, description=module.__doc__.strip())
    return sweep


def format_argv(evaluation: Evaluation, values: dict[str, Any]) -> list[str]:
    try:
        return [str(a).format(**values) for a in evaluation.argv]
    except KeyError as e:
        raise SweepError(f"evaluation {evaluation.name!r} needs {e.args[0]!r}: give --param {e.args[0]}=VALUE") \
            from None


def _literal(v) -> str:
    """How a value is written in an override (apply_overrides parses it back with literal_eval)."""
    return v if isinstance(v, str) else str(v) if isinstance(v, Named) else repr(v)
