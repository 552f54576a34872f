"""Run metrics: `metrics.jsonl` (one object a logged step), TensorBoard events, and MFU."""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense matmul peaks (FLOP/s per device) for accelerators, bf16 unless noted.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12,
    "NVIDIA H100": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100": 312e12, "NVIDIA L4": 121e12,
}


def measured_matmul_peak(n: int = 1024, dtype=jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of one device on a square matmul, measured now (the CPU has no published peak)."""
    dev = jax.devices()[0]
    a = jax.device_put(jnp.ones((n, n), dtype), dev)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def device_peak_flops(configured: float = 0.0) -> tuple[float, str]:
    if configured:
        return configured, "config"
    kind = jax.devices()[0].device_kind
    for name, peak in PEAK_FLOPS.items():
        if kind.startswith(name):
            return peak, kind
    return measured_matmul_peak(), f"measured matmul on {kind}"


class MetricsWriter:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled and jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict, prefix: str = "") -> dict:
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.size == 1:
                row[prefix + k] = float(v)
        if self.enabled:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(k, v, step)
        return row

    def close(self):
        if self.enabled:
            self._jsonl.close()
            self._tb.close()


def format_metrics(metrics: dict) -> str:
    """`k=v` pairs with plain numbers (4 significant digits) for log lines; numpy scalars print as numbers."""
    def plain(v):
        if isinstance(v, (bool, str)) or v is None:
            return str(v)
        v = np.asarray(v)
        if v.size != 1:
            return f"<array {v.shape}>"
        v = v.item()
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return " ".join(f"{k}={plain(v)}" for k, v in metrics.items())


def read_metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
