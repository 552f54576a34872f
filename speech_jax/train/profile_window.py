"""A profiler window over training steps (`train.profile_steps = "start:stop"`).

Steps whose 0-based index i has start <= i < stop (logged as steps start+1 .. stop) are traced with
`jax.profiler` into `<logdir>/plugins/profile/<run>/`, where TensorBoard's profile plugin finds them:
`tensorboard --logdir <workdir>/tensorboard`. Skip the first step of a run, which compiles.
"""
from __future__ import annotations

import logging

import jax


def parse_window(spec) -> tuple[int, int] | None:
    """"start:stop" or (start, stop) -> (start, stop); "" or None -> None."""
    if not spec:
        return None
    start, stop = (int(v) for v in (spec.split(":") if isinstance(spec, str) else spec))
    if not 0 <= start < stop:
        raise ValueError(f"train.profile_steps must be 'start:stop' with 0 <= start < stop, got {spec!r}")
    return start, stop


class ProfileWindow:
    def __init__(self, spec, logdir: str):
        self.window = parse_window(spec)
        self.logdir = logdir
        self.active = False

    def before_step(self, step: int) -> None:
        """`step`: the 0-based index of the step about to be dispatched (a resumed run may start inside)."""
        if self.window and not self.active and self.window[0] <= step < self.window[1]:
            logging.info("profiling steps %d to %d into %s", step, self.window[1] - 1, self.logdir)
            jax.profiler.start_trace(self.logdir)
            self.active = True

    def after_step(self, steps_done: int, outputs) -> None:
        """Stops once the window's last step has run (waits for `outputs`, so its device work is traced)."""
        if self.active and steps_done >= self.window[1]:
            self.close(outputs)

    def close(self, outputs=None) -> None:
        if self.active:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.active = False
