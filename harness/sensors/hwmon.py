"""Power and energy from hwmon: the ACPI power meter, energy counters, other power sensors.

``$HARNESS_SYSFS/class/hwmon/hwmon*/``: ``energy*_input`` counters (µJ) and ``power*_input`` /
``power*_average`` (µW). The device's ``name`` file decides the domain: ``power_meter`` (the ACPI
power meter, ``power1_average``) is ``system``, a meter at the machine's input that contains the
GPUs; ``amdgpu`` is skipped (GPUs belong to their own source); ``ina3221`` belongs to the jetson
source; ``amd_energy``'s ``Esocket<N>`` is ``cpu:<N>`` when RAPL is absent; everything else is
``hwmon:<name>:<label or channel>``, a part that is never summed into a total. An energy counter
publishes no wrap range, so a step back is a reset (with a warning), never a wrap.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import SensorError
from harness.sensors.base import COUNTER, POWER
from harness.sensors.sysfs_power import (
    EnergyCounter,
    Found,
    PowerFile,
    SysfsPowerSource,
    label_of,
    natural,
)
from harness.sysfs import read_text, sysfs_path

_CHANNEL_RE = re.compile(r"^(energy|power)(\d+)_(input|average)$")
_SOCKET_LABEL_RE = re.compile(r"^Esocket(\d+)$")

#: hwmon drivers whose power is not read here (GPUs and Jetson rails belong to their own sources)
SKIPPED_DRIVERS = ("amdgpu", "ina3221")

#: update periods when the device states none (seconds)
HWMON_PERIOD_S = 0.1
ACPI_PERIOD_S = 1.0


class HwmonSource(SysfsPowerSource):
    """hwmon energy counters and power sensors, the ACPI power meter among them (measured)."""

    name = "hwmon"
    default_period_s = HWMON_PERIOD_S
    contains_gpus = frozenset({"system"})  # the ACPI meter measures at the machine's input

    def scan(self) -> list[Found]:
        return _scan()

    def nothing_found(self) -> str:
        return f"no energy or power sensor under {sysfs_path('class', 'hwmon')}"


def _scan() -> list[Found]:
    found: list[Found] = []
    seen: set[Path] = set()
    rapl_present = any(sysfs_path("class", "powercap").glob("intel-rapl*"))
    for dev in sorted(sysfs_path("class", "hwmon").glob("hwmon*"), key=natural):
        real = dev.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            name = read_text(dev / "name")
        except SensorError:
            continue  # an hwmon device without a name is no energy sensor we know
        if name not in SKIPPED_DRIVERS:
            found += _hwmon_device(dev, name, rapl_present)
    taken: set[str] = set()
    for f in found:  # keep the first of each name; a later namesake becomes <name>#2 (a part)
        if f.domain in taken:
            n = 2
            while f"{f.domain}#{n}" in taken:
                n += 1
            f.domain = f"{f.domain}#{n}"
        taken.add(f.domain)
    return found


def _hwmon_device(dev: Path, name: str, rapl_present: bool) -> list[Found]:
    channels: dict[tuple[str, int], dict[str, Path]] = {}
    for p in dev.iterdir():
        m = _CHANNEL_RE.match(p.name)
        if m:
            channels.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = p
    update_interval = dev / "update_interval"
    out: list[Found] = []
    energy_labels: set[str] = set()
    for (kind, n), files in sorted(channels.items()):
        label = label_of(dev / f"{kind}{n}_label") or f"{kind}{n}"
        if kind == "energy":
            if "input" not in files:
                continue
            energy_labels.add(label)
            m = _SOCKET_LABEL_RE.match(label)
            if name == "amd_energy" and m and not rapl_present:
                domain = f"cpu:{m.group(1)}"
            else:
                domain = f"hwmon:{name}:{label}"
            path = files["input"]
            make = lambda p=path: EnergyCounter(p)  # noqa: E731
            out.append(
                Found(domain, COUNTER, HWMON_PERIOD_S, make, period_files=(update_interval,))
            )
            continue
        if label in energy_labels or f"energy{n}" in energy_labels:
            continue  # the same sensor as an energy counter, which is better
        path = files.get("input") or files["average"]
        average_interval = dev / f"power{n}_average_interval"
        if name == "power_meter":
            domain, p_s, stated = "system", ACPI_PERIOD_S, (average_interval,)
        else:
            domain, p_s = f"hwmon:{name}:{label}", HWMON_PERIOD_S
            stated = (average_interval, update_interval)
        make = lambda p=path: PowerFile(p, 1e-6)  # noqa: E731
        out.append(Found(domain, POWER, p_s, make, period_files=stated))
    return out
