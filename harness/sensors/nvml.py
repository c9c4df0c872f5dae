"""NVIDIA GPUs as an energy source, through NVML (``harness.sensors.gpu.nvidia``).

* Volta and newer: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded), a counter
  read at window edges. It advances in steps of about 100 ms on many boards.
* Older GPUs: no energy counter, so power is sampled by the meter and integrated:
  ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it, else ``nvmlDeviceGetPowerUsage``, which is
  a one-second average on many boards (so short windows are smeared).
* A MIG instance has no energy of its own in NVML: such domains are ``unavailable``.

How domains are numbered and read is ``harness.sensors.gpu.source``, shared with AMD's amdsmi.
"""

from __future__ import annotations

from harness.sensors.gpu.nvidia import NO_DRIVER
from harness.sensors.gpu.source import GpuSource

__all__ = ["NO_DRIVER", "NvmlSource"]


class NvmlSource(GpuSource):
    """Energy of each visible NVIDIA GPU (counter on Volta+, sampled power before)."""

    name = "nvml"
    index_key = "nvml_index"
    none_found = "NVML found no NVIDIA GPU"
