"""Length-grouped batching: similar lengths share a batch, so padding to a bucket wastes little.

Grain has no length bucketing for IterDatasets, so this small stage does it: it reads a window of
`window × batch_size` examples, sorts them by length, cuts them into batches and yields those batches
in a seeded random order. Its checkpoint state is the parent's state at the start of the window plus
the position inside it; restoring re-reads that window, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

from collections.abc import Callable

import grain
import numpy as np


def audio_length(example: dict) -> int:
    return len(example["audio"])


class LengthGroupedBatches(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, batch_size: int, window: int, batch_fn: Callable,
                 *, seed: int, length_fn: Callable = audio_length):
        super().__init__(parent)
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be positive, got {batch_size}, {window}")
        self.batch_size, self.window, self.batch_fn = batch_size, window, batch_fn
        self.seed, self.length_fn = seed, length_fn

    def __iter__(self):
        return _GroupedIterator(self._parent.__iter__(), self)

    def __str__(self):
        return f"LengthGroupedBatches(batch_size={self.batch_size}, window={self.window})"


class _GroupedIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, spec: LengthGroupedBatches):
        super().__init__(parent)
        self.spec = spec
        self._window = -1          # index of the window held in self._batches
        self._window_start = None  # parent state just before that window was read
        self._batches: list[list[dict]] = []
        self._pos = 0

    def _read_window(self) -> None:
        self._window += 1
        self._window_start = self._parent.get_state()
        examples = []
        for _ in range(self.spec.batch_size * self.spec.window):
            try:
                examples.append(next(self._parent))
            except StopIteration:
                break
        if len(examples) < self.spec.batch_size:
            raise StopIteration
        examples.sort(key=self.spec.length_fn)  # stable: ties keep stream order
        n = len(examples) // self.spec.batch_size
        batches = [examples[i * self.spec.batch_size:(i + 1) * self.spec.batch_size] for i in range(n)]
        order = np.random.default_rng([self.spec.seed, self._window]).permutation(n)
        self._batches = [batches[i] for i in order]
        self._pos = 0

    def __next__(self):
        if self._pos >= len(self._batches):
            self._read_window()
        batch = self._batches[self._pos]
        self._pos += 1
        return self.spec.batch_fn(batch)

    def get_state(self) -> dict:
        if self._window < 0:
            return {"parent": self._parent.get_state(), "window": -1, "pos": 0}
        return {"parent": self._window_start, "window": self._window, "pos": self._pos}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(state["parent"])
        self._window = int(state["window"]) - 1
        self._batches, self._pos = [], 0
        if state["window"] >= 0:
            self._read_window()
            self._pos = int(state["pos"])
