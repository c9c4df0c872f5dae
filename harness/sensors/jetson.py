"""NVIDIA Jetson boards: the INA3221 power monitor's rails.

JetPack 5+ (``bus/i2c/drivers/ina3221/*/hwmon/hwmon*``: ``in*_label``, ``in*_input`` mV,
``curr*_input`` mA; the same folder also shows under class/hwmon, and the hwmon source leaves it
here) and JetPack 4 (``bus/i2c/drivers/ina3221x/*/iio:device*``: ``rail_name_N``,
``in_powerN_input`` mW). ``VDD_IN`` / ``POM_5V_IN`` is ``board``, other rails are ``rail:<name>``
(parts inside the board, never summed). The chip averages over its ``update_interval``, which is
each rail's update period: a window shorter than ten of them gets a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.sensors.base import POWER
from harness.sensors.sysfs_power import (
    Found,
    PowerFile,
    SysfsPowerSource,
    VoltsTimesAmps,
    label_of,
    natural,
)
from harness.sysfs import sysfs_path

_JP4_RAIL_RE = re.compile(r"^rail_name_(\d+)$")
_JP5_LABEL_RE = re.compile(r"^in(\d+)_label$")

#: rails that carry a Jetson board's whole input power
BOARD_RAILS = ("VDD_IN", "POM_5V_IN")
INA3221_PERIOD_S = 0.01


class JetsonSource(SysfsPowerSource):
    """The board's input and its rails from a Jetson's INA3221 (measured)."""

    name = "jetson"
    default_period_s = INA3221_PERIOD_S

    def scan(self) -> list[Found]:
        return scan_rails()

    def nothing_found(self) -> str:
        return "no Jetson INA3221 power monitor (bus/i2c/drivers/ina3221 or ina3221x)"


def scan_rails() -> list[Found]:
    """Every rail of the INA3221 chips, each chip read once."""
    found: list[Found] = []
    for dev in sorted(sysfs_path("bus", "i2c", "drivers", "ina3221").glob("*/hwmon/hwmon*")):
        found += _ina3221_jp5(dev)
    for dev in sorted(sysfs_path("bus", "i2c", "drivers", "ina3221x").glob("*/iio:device*")):
        found += _ina3221_jp4(dev)
    return found


def _rail_domain(rail: str) -> str:
    return "board" if rail in BOARD_RAILS else f"rail:{rail.lower()}"


def _usable_rail(rail: str) -> bool:
    return bool(rail) and rail.upper() not in ("NC", "N/A")


def _ina3221_jp5(dev: Path) -> list[Found]:
    """JetPack 5+: the mainline hwmon driver; bus voltage in mV and current in mA per channel."""
    stated = (dev / "update_interval",)
    out = []
    for label_path in sorted(dev.glob("in*_label"), key=natural):
        m = _JP5_LABEL_RE.match(label_path.name)
        rail = label_of(label_path) if m else ""
        if not _usable_rail(rail):
            continue
        n = m.group(1)
        volt, curr = dev / f"in{n}_input", dev / f"curr{n}_input"
        if not curr.exists():
            continue  # a shunt-voltage or sum channel, not a rail
        out.append(
            Found(
                _rail_domain(rail),
                POWER,
                INA3221_PERIOD_S,
                lambda v=volt, c=curr: VoltsTimesAmps(v, c, 1e-6),
                period_files=stated,
            )
        )
    return out


def _ina3221_jp4(dev: Path) -> list[Found]:
    """JetPack 4: NVIDIA's ina3221x iio driver; ``in_powerN_input`` in mW."""
    out = []
    for name_path in sorted(dev.glob("rail_name_*"), key=natural):
        m = _JP4_RAIL_RE.match(name_path.name)
        rail = label_of(name_path) if m else ""
        if not _usable_rail(rail):
            continue
        power = dev / f"in_power{m.group(1)}_input"
        out.append(
            Found(_rail_domain(rail), POWER, INA3221_PERIOD_S, lambda p=power: PowerFile(p, 1e-3))
        )
    return out
