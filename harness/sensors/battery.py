"""A discharging laptop battery: the machine's whole draw, from ``class/power_supply/BAT*``.

A discharging battery is the ``board`` (``power_now``, or ``voltage_now`` × ``current_now``);
a charging or full one measures the charger, not the machine, so it is unavailable, and one
that stops discharging mid-run fails its reads (the meter drops it with a warning). Beside a
Jetson's input rail, which keeps ``board``, the battery is ``battery``, a part.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import SensorError
from harness.sensors.base import POWER, UNAVAILABLE
from harness.sensors.sysfs_power import (
    Found,
    PowerFile,
    Reader,
    SysfsPowerSource,
    VoltsTimesAmps,
    natural,
)
from harness.sysfs import read_text, sysfs_path

BATTERY_PERIOD_S = 1.0


class BatterySource(SysfsPowerSource):
    """The discharge power of the machine's batteries (measured)."""

    name = "battery"
    default_period_s = BATTERY_PERIOD_S

    def scan(self) -> list[Found]:
        found = _batteries()
        if found:
            from harness.sensors.jetson import scan_rails

            if any(f.domain == "board" for f in scan_rails()):
                for f in found:
                    f.domain = "battery"  # a Jetson's input rail keeps the name board
        return found

    def nothing_found(self) -> str:
        return f"no battery under {sysfs_path('class', 'power_supply')}"


class _Batteries(Reader):
    """The summed discharge power of the discharging batteries; fails once none discharges."""

    def __init__(self, batteries: list[Path]):
        self._parts: list[tuple[Path, Reader]] = []
        for bat in batteries:
            self._parts.append((bat / "status", _battery_power(bat)))
        self.files = tuple(f for _, r in self._parts for f in r.files)

    def value(self) -> float:
        watts, discharging = 0.0, False
        for status_path, reader in self._parts:
            if read_text(status_path) == "Discharging":
                discharging = True
                watts += reader.value()
        if not discharging:
            names = ", ".join(p.parent.name for p, _ in self._parts)
            raise SensorError(
                f"{names} stopped discharging: on mains power a battery does not measure the machine"
            )
        return watts


def _battery_power(bat: Path) -> Reader:
    if (bat / "power_now").exists():
        return PowerFile(bat / "power_now", 1e-6)
    return VoltsTimesAmps(bat / "voltage_now", bat / "current_now", 1e-12)


def _batteries() -> list[Found]:
    batteries = []
    for bat in sorted(sysfs_path("class", "power_supply").glob("BAT*"), key=natural):
        try:
            if read_text(bat / "type") == "Battery":
                batteries.append(bat)
        except SensorError:
            continue
    if not batteries:
        return []
    found = Found("board", POWER, BATTERY_PERIOD_S, lambda: _Batteries(batteries))
    statuses = {}
    for bat in batteries:
        try:
            statuses[bat.name] = read_text(bat / "status")
        except SensorError as e:
            statuses[bat.name] = str(e)
    if "Discharging" not in statuses.values():
        shown = ", ".join(f"{n} is {s}" for n, s in statuses.items())
        found.status = UNAVAILABLE
        found.reason = (
            f"{shown}: on mains power a battery does not measure the machine; unplug to measure"
        )
        found.make = None
    return [found]
