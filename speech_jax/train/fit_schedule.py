"""A schedule that ends as the time runs out (`train.fit_schedule_at`).

A run with a wall-clock budget (`train.max_minutes`) whose `train.steps` the machine cannot reach stops with
its learning rate still high, and one that reaches them early leaves time unused. After `fit_schedule_at`
steps (within the warm-up, so that no update yet depends on the length) the loop times the steps it has run
and sets the schedule's length to what the time left holds; the length lives in the optimizer state
(optim.scale_by_fitted_schedule, set by optim.with_schedule_steps), so a resumed run keeps it."""
from __future__ import annotations

import statistics

import jax
import numpy as np
from jax.experimental import multihost_utils

# The share of the time left that the fitted steps fill at the timed speed. Cut short, a cosine has nearly
# decayed (at 95 % of its length to within 0.6 % of its end), while time a schedule leaves is lost to the stage,
# so all of it: in the 30-minute demo at 0.95 the stages' later steps took 0.95-1.03x the timed ones, and
# they used 91-98 % of their shares.
FILL = 1.0


def fitted_length(step: int, interval_seconds: list[float], seconds_left: float) -> int:
    """The steps done and as many more as FILL of the time left holds at the median seconds a step of the
    timed intervals after the first (which holds the first steps of the other batch shapes: they compile)."""
    if not interval_seconds:
        raise ValueError("no timed steps to fit the schedule's length from")
    per_step = statistics.median(interval_seconds[1:] or interval_seconds)
    return step + max(1, int(FILL * max(seconds_left, 0.0) / per_step))


def agreed(length: int) -> int:
    """Process 0's length on every process (their clocks differ; the schedule and the stop must not)."""
    if jax.process_count() == 1:
        return length
    return int(multihost_utils.broadcast_one_to_all(np.int32(length)))

