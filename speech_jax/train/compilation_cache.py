"""XLA's compiled programs kept on disk (`train.compilation_cache_dir`), so a run that compiles a program an
earlier one compiled (a resume, the stage after the demo's speed probe) reads it back instead: on a 2-core CPU
the 30-minute demo tokenizer's step compiles in 24 s and reads back in 1.8 s (its tracing, 4.5 s, remains).

JAX's own persistent cache (`jax_compilation_cache_dir`), which a process can point at one directory only:
the first one set (by a config, or JAX_COMPILATION_CACHE_DIR) is kept. Off unless set: XLA compiles CPU code
for the host it runs on, so a cache is not to be carried to another machine with the workdir."""
from __future__ import annotations

import logging
import os

import jax


def use_compilation_cache(directory: str) -> None:
    """Keeps this process's compiled programs in `directory` ("" = leave JAX's setting as it is)."""
    if not directory:
        return
    path = os.path.abspath(os.path.expanduser(directory))
    current = jax.config.jax_compilation_cache_dir
    if current is None:
        jax.config.update("jax_compilation_cache_dir", path)
    elif os.path.abspath(current) != path:
        logging.info("compilation cache: this process keeps using %s (not %s)", current, path)
