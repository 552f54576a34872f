"""Logging one step behind: a logged step's metrics are fetched after the next step has been dispatched,
so the device never idles while the host waits for numbers, formats them and writes them
(`train.metrics_one_behind`). The fetched values are the same; only when they are written changes."""
from __future__ import annotations

from typing import Callable


class OneBehind:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._due: Callable[[], None] | None = None

    def submit(self, write: Callable[[], None], defer: bool) -> None:
        """Runs `write` now, or (enabled and `defer`) at the next `flush`."""
        self.flush()
        if self.enabled and defer:
            self._due = write
        else:
            write()

    def flush(self) -> None:
        """Writes the deferred row, if any: call right after dispatching the next step, and before stopping."""
        due, self._due = self._due, None
        if due is not None:
            due()
