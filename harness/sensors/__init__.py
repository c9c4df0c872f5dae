"""Energy sources, reached by name. Adding a source is one module and one line here."""

from __future__ import annotations

import importlib

from harness.errors import HarnessError
from harness.sensors.base import (
    CODECARBON,
    COUNTER,
    CROSSCHECK,
    ESTIMATE,
    ESTIMATED,
    MEASURED,
    NO_PERMISSION,
    OK,
    POWER,
    UNAVAILABLE,
    DomainStatus,
    Source,
)

#: source name -> "module:Class"
REGISTRY: dict[str, str] = {
    "rapl": "harness.sensors.rapl:RaplSource",
    "nvml": "harness.sensors.nvml:NvmlSource",
    "amdsmi": "harness.sensors.amdsmi:AmdsmiSource",
    "hwmon": "harness.sensors.hwmon:HwmonSource",
    "jetson": "harness.sensors.jetson:JetsonSource",
    "battery": "harness.sensors.battery:BatterySource",
    "estimate": "harness.sensors.estimate:EstimateSource",
    "codecarbon": "harness.sensors.codecarbon_source:CodecarbonSource",
}

#: sources that measure; ``auto`` uses every one that has a usable domain.
MEASURING = ("rapl", "nvml", "amdsmi", "hwmon", "jetson", "battery")

__all__ = [
    "CODECARBON",
    "COUNTER",
    "CROSSCHECK",
    "ESTIMATE",
    "ESTIMATED",
    "MEASURED",
    "NO_PERMISSION",
    "OK",
    "POWER",
    "UNAVAILABLE",
    "DomainStatus",
    "REGISTRY",
    "Source",
    "create",
    "estimate_options",
    "probe_all",
    "resolve",
]


def estimate_options(estimate: dict | None) -> dict:
    """A suite's ``measurement.estimate`` block as the estimate source's keyword options (here,
    not in the estimate module, so a meter that needs no estimate never imports psutil)."""
    return {f"estimate_{k}" if k == "model" else k: v for k, v in (estimate or {}).items()}


def create(name: str, **options) -> Source:
    """A new source by its registry name. ``options`` go to sources that take them (e.g. tdp_w)."""
    try:
        target = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise HarnessError(f"unknown sensor source {name!r} (known: {known})") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    import inspect

    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


def probe_all(**options) -> list[DomainStatus]:
    """Every source and domain on this machine with its status (``harness sensors``)."""
    rows: list[DomainStatus] = []
    for name in REGISTRY:
        source = create(name, **options)
        try:
            rows += source.probe()
        finally:
            source.close()
    return rows


def resolve(sensors: str | list[str] = "auto", **options) -> list[Source]:
    """The sources a meter reads.

    ``auto``: every measuring source with an ``ok`` domain, and the estimate source for the
    component classes nothing measures where they may be needed: no CPU reading and either no
    whole-device reading or a GPU beside it (a whole-device meter that fails leaves the total
    to the components, and RAPL psys may leave a GPU out): a CPU estimate; the same for DRAM: a
    RAM estimate. codecarbon is opt-in (it takes about a second to start).
    """
    if isinstance(sensors, str) and sensors != "auto":
        sensors = [s.strip() for s in sensors.split(",") if s.strip()]
    if isinstance(sensors, str):
        from harness.sensors.domains import domain_class

        chosen: list[Source] = []
        classes: set[str] = set()
        taken: set[str] = set()
        for name in MEASURING:
            source = create(name, **options)
            source.probed = source.probe()
            usable = [row for row in source.probed if row.status == OK]
            # a machine with GPUs of two vendors: the first source keeps the gpu:N names
            if usable and not taken & {row.domain for row in usable}:
                taken |= {row.domain for row in usable}
                chosen.append(source)
                classes |= {domain_class(row.domain) for row in usable}
            else:
                source.close()
        whole = bool(classes & {"board", "system"})
        needs_parts = not whole or "gpu" in classes
        estimate_classes = []
        if "cpu" not in classes and needs_parts:
            estimate_classes.append("cpu")
        if "memory" not in classes and needs_parts:
            estimate_classes.append("memory")
        if estimate_classes:
            chosen.append(create("estimate", classes=estimate_classes, **options))
        return chosen
    if not sensors:
        raise HarnessError("sensors: the list of sources is empty")
    return [create(name, **options) for name in sensors]
