"""Per-chip HBM, peak dense bf16 FLOP/s and HBM bandwidth of the accelerators `speech-jax compile` targets.

Sources (vendors' published figures):
  TPU v5e  cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s
  TPU v5p  cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GB HBM2e at 2765 GB/s
  TPU v6e  cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GB HBM at 1638 GB/s
  H100 SXM nvidia.com/en-us/data-center/h100 (datasheet): 989 TFLOP/s dense bf16, 80 GB HBM3 at 3.35 TB/s
  H200 SXM nvidia.com/en-us/data-center/h200 (datasheet): 989 TFLOP/s dense bf16, 141 GB HBM3e at 4.8 TB/s
"""
from __future__ import annotations

import dataclasses

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    hbm_bytes: float
    peak_flops: float       # dense bf16, per chip
    hbm_bytes_per_s: float


CHIPS = {
    "v5e": Chip("TPU v5e", 16 * GiB, 197e12, 819e9),
    "v5p": Chip("TPU v5p", 95e9, 459e12, 2765e9),
    "v6e": Chip("TPU v6e", 32e9, 918e12, 1638e9),
    "h100": Chip("NVIDIA H100 SXM", 80e9, 989e12, 3.35e12),
    "h200": Chip("NVIDIA H200 SXM", 141e9, 989e12, 4.8e12),
}


def chip_for(topology: str) -> Chip | None:
    """The chip of a topology name such as "v5p:4x4x4" or "v5e:16x16"; None for host CPUs."""
    return CHIPS.get(topology.split(":", 1)[0].lower())
