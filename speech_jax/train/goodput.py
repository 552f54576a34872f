"""Goodput: the shares of a run's wall time spent stepping, compiling, waiting for data, evaluating,
checkpointing, writing metrics and starting up (`goodput/<category>` in each logged training row of
metrics.jsonl).

Wall time counts from the start of `train()`; time in none of the categories (the loop's own
bookkeeping, the progress bar) is the rest, so the shares sum to a little under 1. With asynchronous dispatch a step's
device time is spent where the host waits for its results (fetching metrics), which counts as `step`;
so `data` is the host's time in the input pipeline, which overlaps the device's step: it is lost time only
where it exceeds the step's (measured: flow matching on this project's 2-core CPU showed `data` 0.26 of the
wall time, and loading a third cheaper left the step time where it was); the first step of an invocation,
compiled then, counts as `compile`; the evaluation's compilation counts as
`eval`; `checkpoint` is the time a save blocks the loop (an async save writes in the background).
"""
from __future__ import annotations

import contextlib
import time

CATEGORIES = ("step", "compile", "data", "eval", "checkpoint", "log", "init")


class Goodput:
    def __init__(self, start: float):
        self.start = start  # time.perf_counter() at the start of the run
        self.spent = dict.fromkeys(CATEGORIES, 0.0)

    def add(self, category: str, seconds: float) -> None:
        self.spent[category] += seconds

    @contextlib.contextmanager
    def timing(self, category: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(category, time.perf_counter() - t)

    def shares(self) -> dict[str, float]:
        wall = max(time.perf_counter() - self.start, 1e-9)
        return {f"goodput/{k}": v / wall for k, v in self.spent.items()}
