"""Launches N JAX processes on this machine as one multi-host job (a localhost coordinator, CPU
collectives through gloo), each with its own host devices, under a hard timeout: a hung collective
fails the test (or the benchmark) instead of hanging."""
from __future__ import annotations

import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def job_env(process_id: int, num_processes: int, port: int, devices: int) -> dict:
    """The environment `sharding.maybe_initialize_distributed` reads, for one process of the job."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env.update(XLA_FLAGS=" ".join(flags + [f"--xla_force_host_platform_device_count={devices}"]),
               JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
               JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(process_id))
    return env


class Job:
    """N processes running `argv`; their output goes to files in `logdir` (no pipe can fill and block)."""

    def __init__(self, argv: list[str], num_processes: int, devices: int, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        port = free_port()
        self.logs = [os.path.join(logdir, f"process_{i}.log") for i in range(num_processes)]
        self.procs = []
        for i, log in enumerate(self.logs):
            with open(log, "wb") as out:
                self.procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                                   env=job_env(i, num_processes, port, devices)))

    def tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- process {i}:\n{open(p, errors='replace').read()[-chars:]}"
                         for i, p in enumerate(self.logs))

    def wait(self, timeout: float) -> list[int]:
        """Exit codes; kills every process and raises with their logs when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in self.procs]
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"multi-process job still running after {timeout:.0f} s\n{self.tail()}")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
