"""Which domains add up to a total, without counting any joule twice.

Overlaps: ``system`` (ACPI meter, RAPL psys) and ``board`` (an edge board's input rail) contain
everything else; a CPU package contains its core and uncore subzones (``cpu:0:core``); Jetson
rails (``rail:*``) sit inside ``board``. So a total is either one whole-device figure or the sum of
disjoint components: CPU packages + DRAM (or the RAM estimate) + GPUs.
"""

from __future__ import annotations

import functools

from harness.sensors.base import ESTIMATED, MEASURED


@functools.lru_cache(maxsize=1024)
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


def class_domains(methods: dict[str, str]) -> dict[str, list[str]]:
    """Per component class (cpu, memory, gpu), the domains that stand for it.

    The measured domains if any, else the estimated ones: a measured CPU package is never summed
    with a CPU estimate.
    """
    out: dict[str, list[str]] = {}
    for cls in ("cpu", "memory", "gpu"):
        members = [d for d in methods if domain_class(d) == cls]
        measured = [d for d in members if methods[d] == MEASURED]
        if members:
            out[cls] = sorted(measured or members)
    return out


def total_domains(
    methods: dict[str, str],
    contains_gpus: frozenset[str] | set[str] = frozenset(),
    distrusted: frozenset[str] | set[str] = frozenset(),
) -> list[str]:
    """The domains whose sum is the total, given each available domain's method.

    A measured, trusted ``board`` (an edge board's input rail) always wins. A measured, trusted
    ``system`` wins when it contains the GPUs (``contains_gpus``: an ACPI meter at the machine's
    input) or no GPU is measured: RAPL psys may leave out PCIe cards powered straight from the
    supply, so beside a GPU it yields to the components. Otherwise the components: CPU packages
    + DRAM (or the RAM estimate) + GPUs, each class measured where anything measures it.
    ``distrusted``: whole-device domains caught reading 0 or frozen while the parts drew power.
    """
    if methods.get("board") == MEASURED and "board" not in distrusted:
        return ["board"]
    per_class = class_domains(methods)
    gpu_measured = any(methods[d] == MEASURED for d in per_class.get("gpu", []))
    system_ok = methods.get("system") == MEASURED and "system" not in distrusted
    if system_ok and ("system" in contains_gpus or not gpu_measured):
        return ["system"]
    chosen = [d for cls in ("cpu", "memory", "gpu") for d in per_class.get(cls, [])]
    if not chosen:
        for whole in ("board", "system"):
            if whole in methods and whole not in distrusted:
                return [whole]
    return chosen


def combined_method(methods: dict[str, str], domains: list[str]) -> str:
    """``estimated`` if any figure the total is built from is estimated."""
    if not domains:
        return ESTIMATED
    return ESTIMATED if any(methods[d] != MEASURED for d in domains) else MEASURED
