"""train.compilation_cache_dir: compiled programs land there and a second process reads them back."""
import os
import subprocess
import sys

SCRIPT = """
import logging, sys, jax, jax.numpy as jnp
logging.basicConfig(level=logging.WARNING)
jax.config.update("jax_log_compiles", True)  # cache hits and misses logged as warnings
from speech_jax.train.compilation_cache import use_compilation_cache
use_compilation_cache(sys.argv[1])
use_compilation_cache(sys.argv[2])  # a process keeps the first directory
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
print(float(jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.float32(0.5))))
"""


def _run(first, second):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}  # not the suite's own cache
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(first), str(second)], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1]), "Persistent compilation cache hit" in out.stderr


def test_programs_are_kept_in_the_first_directory_and_read_back(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    value, hit = _run(first, second)
    assert not hit and any(name.startswith("jit_") for name in os.listdir(first)) and not second.exists()
    assert _run(first, second) == (value, True)
