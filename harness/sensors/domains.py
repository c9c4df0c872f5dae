"""Which domains add up to a total, without counting any joule twice.

Overlaps: ``system`` (ACPI meter, RAPL psys) and ``board`` (an edge board's input rail) contain
everything else; a CPU package contains its core and uncore subzones (``cpu:0:core``); Jetson
rails (``rail:*``) sit inside ``board``. So a total is either one whole-device figure or the sum of
disjoint components: CPU packages + DRAM (or the RAM estimate) + GPUs.
"""

from __future__ import annotations

from harness.sensors.base import ESTIMATED, MEASURED


def domain_class(domain: str) -> str:
    """``board``, ``system``, ``cpu``, ``memory``, ``gpu`` or ``part`` (never summed)."""
    head, _, rest = domain.partition(":")
    if head in ("board", "system"):
        return head
    if head == "cpu" and ":" not in rest:
        return "cpu"
    if head in ("dram", "ram") and ":" not in rest:
        return "memory"
    if head == "gpu":
        return "gpu"
    return "part"


def total_domains(methods: dict[str, str]) -> list[str]:
    """The domains whose sum is the total, given each available domain's method.

    A measured whole-device figure wins (board, then system). Otherwise, per component class, the
    measured domains if any, else the estimated ones: a measured CPU package is never summed with a
    CPU estimate.
    """
    for whole in ("board", "system"):
        if methods.get(whole) == MEASURED:
            return [whole]
    chosen: list[str] = []
    for cls in ("cpu", "memory", "gpu"):
        members = [d for d in methods if domain_class(d) == cls]
        measured = [d for d in members if methods[d] == MEASURED]
        chosen += sorted(measured or members)
    if not chosen:
        for whole in ("board", "system"):
            if whole in methods:
                return [whole]
    return chosen


def combined_method(methods: dict[str, str], domains: list[str]) -> str:
    """``estimated`` if any figure the total is built from is estimated."""
    if not domains:
        return ESTIMATED
    return ESTIMATED if any(methods[d] != MEASURED for d in domains) else MEASURED
