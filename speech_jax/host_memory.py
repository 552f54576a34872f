"""glibc malloc settings that make XLA:CPU steps faster.

XLA:CPU allocates each execution's temporaries anew. With glibc's defaults, blocks that large (and any
allocated by worker threads, which get mmap'd arenas) are mmap'd and unmapped again, so every training
step page-faults its temporaries back in: for the AR `small` step, ~0.9 GB, ~230k faults and ~8 % of
the step's time (MFU 0.56 → 0.62 with the settings below, `experiments/bench_ar.py`). Keeping freed
memory in one heap removes that; the price is that the process's resident memory stays at its peak.

glibc settles these at start-up or when a thread first allocates, so `keep_freed_host_memory()` runs
before JAX starts its CPU threads (the CLI does it first). Any process can get the same with
    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=2147483647
"""
from __future__ import annotations

import ctypes
import glob
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_LARGEST = 2**31 - 1
ENV = "SPEECH_JAX_MALLOC"  # "keep" | "default"; unset: keep on hosts without an accelerator


def keep_freed_host_memory() -> bool:
    """One arena, no mmap for large blocks, no trimming. False where glibc is absent or refuses."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, _LARGEST), (_M_TRIM_THRESHOLD, _LARGEST)))


def _has_accelerator() -> bool:
    # GPUs (/dev/nvidia0, /dev/kfd) and TPUs (/dev/accel*, /dev/vfio): their steps do not run in host
    # memory, and one arena could slow a busy multi-threaded input pipeline there.
    return any(glob.glob(p) for p in ("/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel*", "/dev/vfio/[0-9]*"))


def configure_from_environment() -> bool:
    """Applies `keep_freed_host_memory` when $SPEECH_JAX_MALLOC says keep, or is unset on a CPU-only host."""
    choice = os.environ.get(ENV, "")
    if choice not in ("", "keep", "default"):
        raise ValueError(f"${ENV} must be 'keep' or 'default', got {choice!r}")
    if choice == "default" or (not choice and _has_accelerator()):
        return False
    return keep_freed_host_memory()
