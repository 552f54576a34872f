"""Stopping together: a checkpoint save is collective, so every process must decide to stop at the same step."""
from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def agree(preempted: bool, out_of_time: bool) -> tuple[bool, bool]:
    """(preempted, out_of_time) as all processes see them: a SIGTERM on any process stops every one, and
    the deadline is process 0's clock (hosts' clocks and start times differ).

    One all-gather of two integers across processes; nothing to agree on in a single process."""
    if jax.process_count() == 1:
        return preempted, out_of_time
    flags = multihost_utils.process_allgather(np.asarray([preempted, out_of_time], np.int32))
    return bool(flags[:, 0].any()), bool(flags[0, 1])
