"""The GPU device layer: one abstract ``Gpu`` and ``Gpus`` session, a class per vendor behind it.

``open_gpus("nvml")`` or ``open_gpus("amdsmi")`` opens one vendor's library (the only places
that import pynvml or amdsmi); ``find_gpus()`` opens the first vendor that has a GPU here and
gives ``NoGpus`` (the null object) where none has. ``visible(gpus)`` lists the GPUs this process
sees, in the order CUDA (or HIP) numbers them. Adding a vendor is one module with a ``Gpu`` and a
``Gpus`` subclass and one line in ``VENDORS``.
"""

from __future__ import annotations

import importlib
import os

from harness.sensors.gpu.common import (
    BrokenGpu,
    Gpu,
    GpuError,
    GpuLost,
    GpuNoDriver,
    GpuNotSupported,
    GpuPermissionError,
    Gpus,
    NoGpus,
)

#: vendor (the energy source's name) -> "module:Gpus class"
VENDORS: dict[str, str] = {
    "nvml": "harness.sensors.gpu.nvidia:NvidiaGpus",
    "amdsmi": "harness.sensors.gpu.amd:AmdGpus",
}

__all__ = [
    "VENDORS",
    "BrokenGpu",
    "Gpu",
    "GpuError",
    "GpuLost",
    "GpuNoDriver",
    "GpuNotSupported",
    "GpuPermissionError",
    "Gpus",
    "NoGpus",
    "driver_version",
    "find_gpus",
    "open_gpus",
    "visible",
]


def open_gpus(vendor: str) -> Gpus:
    """A session of ``vendor``'s library; raises ``GpuNoDriver`` or ``GpuError`` if it can't."""
    module_name, _, cls_name = VENDORS[vendor].partition(":")
    return getattr(importlib.import_module(module_name), cls_name)()


def find_gpus(vendor: str | None = None) -> Gpus:
    """The session of ``vendor`` (or of the first vendor with a GPU here), else ``NoGpus``."""
    reasons = []
    for name in [vendor] if vendor else list(VENDORS):
        try:
            gpus = open_gpus(name)
        except GpuError as e:
            reasons.append(f"{name}: {e.problem}")
            continue
        try:
            if gpus.all():
                return gpus
            reasons.append(f"{name}: no GPU")
        except GpuError as e:
            reasons.append(f"{name}: {e.problem}")
        gpus.close()
    return NoGpus("; ".join(reasons) or "no GPU")


def visible_env(gpus: Gpus) -> tuple[str, str | None]:
    """The first of the session's visibility variables that is set, and its value."""
    for name in gpus.visible_env:
        value = os.environ.get(name)
        if value is not None:
            return name, value
    return gpus.visible_env[0], None


def visible(gpus: Gpus) -> tuple[list[tuple[str, Gpu | BrokenGpu]], str]:
    """The GPUs this process sees, in its own numbering, and a note on any entry ignored."""
    from harness.sensors.cuda_visible import visible as pick

    name, value = visible_env(gpus)
    return pick(value, gpus.all(), gpus, name)


def driver_version() -> str | None:
    """The GPU driver's version (NVIDIA's, else AMD's), or None without one (a run's manifest)."""
    gpus = find_gpus()
    try:
        return gpus.driver_version()
    finally:
        gpus.close()
