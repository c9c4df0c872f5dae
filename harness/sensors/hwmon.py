"""Power and energy from hwmon, NVIDIA Jetson INA3221 rails and a discharging battery.

Three families of sysfs sensors, all measured:

* ``$HARNESS_SYSFS/class/hwmon/hwmon*/``: ``energy*_input`` counters (µJ) and ``power*_input`` /
  ``power*_average`` (µW). The device's ``name`` file decides the domain: ``power_meter`` (the ACPI
  power meter, ``power1_average``) is ``system``; ``amdgpu`` is skipped (GPUs belong to their own
  source); ``amd_energy``'s ``Esocket<N>`` is ``cpu:<N>`` when RAPL is absent; everything else is
  ``hwmon:<name>:<label or channel>``, a part that is never summed into a total.
* Jetson INA3221 rails, JetPack 5+ (``bus/i2c/drivers/ina3221/*/hwmon/hwmon*``: ``in*_label``,
  ``in*_input`` mV, ``curr*_input`` mA) and JetPack 4 (``bus/i2c/drivers/ina3221x/*/iio:device*``:
  ``rail_name_N``, ``in_powerN_input`` mW). ``VDD_IN`` / ``POM_5V_IN`` is ``board``, other rails
  are ``rail:<name>``. A JetPack 5 chip also appears under class/hwmon; it is read once.
* ``class/power_supply/BAT*``: a discharging battery is the ``board`` (power_now, or voltage_now ×
  current_now); a charging or full one measures the charger, not the machine, so it is unavailable.
  A Jetson's input rail keeps ``board``; a battery beside it becomes ``battery``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError
from harness.sensors.base import (
    COUNTER,
    NO_PERMISSION,
    OK,
    POWER,
    UNAVAILABLE,
    CounterUnwrapper,
    DomainStatus,
    Source,
)
from harness.sysfs import IntFile, read_int, read_text, sysfs_path

_CHANNEL_RE = re.compile(r"^(energy|power)(\d+)_(input|average)$")
_JP4_RAIL_RE = re.compile(r"^rail_name_(\d+)$")
_JP5_LABEL_RE = re.compile(r"^in(\d+)_label$")
_SOCKET_LABEL_RE = re.compile(r"^Esocket(\d+)$")

#: rails that carry a Jetson board's whole input power
BOARD_RAILS = ("VDD_IN", "POM_5V_IN")
#: hwmon drivers whose power is not read here (GPUs belong to their own source)
SKIPPED_DRIVERS = ("amdgpu",)

#: update periods when the device states none (seconds)
HWMON_PERIOD_S = 0.1
ACPI_PERIOD_S = 1.0
INA3221_PERIOD_S = 0.01
BATTERY_PERIOD_S = 1.0


# ---------------------------------------------------------------------- readers
class _Reader:
    """Opened files of one domain; ``value`` is watts (power) or monotonic joules (counter)."""

    files: tuple[IntFile, ...] = ()

    def value(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        for f in self.files:
            f.close()


class _PowerFile(_Reader):
    def __init__(self, path: Path, w_per_unit: float):
        self._file = IntFile(path)
        self.files = (self._file,)
        self._w_per_unit = w_per_unit

    def value(self) -> float:
        return self._file.read() * self._w_per_unit


class _VoltsTimesAmps(_Reader):
    """Bus voltage × current, each in its own file (INA3221 mV and mA; battery µV and µA)."""

    def __init__(self, volt_path: Path, curr_path: Path, w_per_unit: float):
        self._volt = IntFile(volt_path)
        self._curr = IntFile(curr_path)
        self.files = (self._volt, self._curr)
        self._w_per_unit = w_per_unit

    def value(self) -> float:
        # some battery drivers report the discharge current as negative
        return abs(self._volt.read() * self._curr.read()) * self._w_per_unit


class _EnergyCounter(_Reader):
    """An hwmon energy counter in µJ; no wrap range is published, so only resets are caught."""

    def __init__(self, path: Path):
        self._file = IntFile(path)
        self.files = (self._file,)
        self._unwrap = CounterUnwrapper(None, self._file.read())

    def value(self) -> float:
        return self._unwrap.update(self._file.read()) / 1e6


class _Batteries(_Reader):
    """The summed discharge power of the discharging batteries; fails once none discharges."""

    def __init__(self, batteries: list[Path]):
        self._parts: list[tuple[Path, _Reader]] = []
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


def _battery_power(bat: Path) -> _Reader:
    if (bat / "power_now").exists():
        return _PowerFile(bat / "power_now", 1e-6)
    return _VoltsTimesAmps(bat / "voltage_now", bat / "current_now", 1e-12)


# ---------------------------------------------------------------------- what a probe finds
@dataclass
class _Found:
    """One domain found by a probe; ``make`` opens its reader (and raises SensorError if it can't)."""

    domain: str
    kind: str
    update_period_s: float
    make: Callable[[], _Reader] | None
    status: str = OK
    reason: str = ""
    #: a battery's board, which yields the name to a Jetson's input rail
    battery: bool = False


class HwmonSource(Source):
    """hwmon energy and power, Jetson INA3221 rails and battery discharge (measured)."""

    name = "hwmon"

    def __init__(self) -> None:
        self.update_period_s = HWMON_PERIOD_S
        self._found: list[_Found] | None = None
        self._counters: list[tuple[str, _Reader]] = []
        self._powers: list[tuple[str, _Reader]] = []

    def probe(self) -> list[DomainStatus]:
        try:
            self._found = _scan()
        except Exception as e:  # probe never raises: an odd tree is a row, not a traceback
            self._found = [_Found("hwmon", POWER, 0.0, None, UNAVAILABLE, f"cannot scan: {e}")]
        for f in self._found:
            if f.status == OK and f.make is not None:
                _try_open(f)
        if not self._found:
            reason = (
                f"no energy or power sensor under {sysfs_path('class', 'hwmon')}, "
                "no Jetson INA3221 rails, no battery"
            )
            return [DomainStatus(self.name, "hwmon", POWER, UNAVAILABLE, reason)]
        return [DomainStatus(self.name, f.domain, f.kind, f.status, f.reason) for f in self._found]

    def open(self) -> None:
        if self._found is None:
            self.probe()
        self.close()
        periods = []
        for f in self._found or []:
            if f.status != OK or f.make is None:
                continue
            try:
                reader = f.make()
            except SensorError:  # gone since the probe: leave it out rather than fail the meter
                continue
            (self._counters if f.kind == COUNTER else self._powers).append((f.domain, reader))
            periods.append(f.update_period_s)
        self.update_period_s = max(periods, default=HWMON_PERIOD_S)

    def counter_domains(self) -> list[str]:
        return [d for d, _ in self._counters]

    def power_domains(self) -> list[str]:
        return [d for d, _ in self._powers]

    def read_energy_j(self) -> dict[str, float]:
        return {d: r.value() for d, r in self._counters}

    def read_power_w(self) -> dict[str, float]:
        return {d: r.value() for d, r in self._powers}

    def close(self) -> None:
        for _, r in self._counters + self._powers:
            r.close()
        self._counters, self._powers = [], []


def _try_open(found: _Found) -> None:
    """Open and close the domain's files once, so the probe reports what a read would meet."""
    try:
        found.make().close()
    except SensorPermissionError as e:
        found.status, found.reason = NO_PERMISSION, f"{e} (needs read access to that file)"
    except SensorError as e:
        found.status, found.reason = UNAVAILABLE, str(e)


def _scan() -> list[_Found]:
    found: list[_Found] = []
    seen: set[Path] = set()
    # Jetson first: its hwmon folder also shows up under class/hwmon and must be read once
    for dev in sorted(sysfs_path("bus", "i2c", "drivers", "ina3221").glob("*/hwmon/hwmon*")):
        seen.add(dev.resolve())
        found += _ina3221_jp5(dev)
    for dev in sorted(sysfs_path("bus", "i2c", "drivers", "ina3221x").glob("*/iio:device*")):
        found += _ina3221_jp4(dev)
    rapl_present = any(sysfs_path("class", "powercap").glob("intel-rapl*"))
    for dev in sorted(sysfs_path("class", "hwmon").glob("hwmon*"), key=_natural):
        real = dev.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            name = read_text(dev / "name")
        except SensorError:
            continue  # an hwmon device without a name is no energy sensor we know
        if name == "ina3221":
            found += _ina3221_jp5(dev)
        elif name not in SKIPPED_DRIVERS:
            found += _hwmon_device(dev, name, rapl_present)
    found += _batteries()
    _rename_duplicates(found)
    return found


def _natural(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def _rename_duplicates(found: list[_Found]) -> None:
    """Keep the first of each domain name; a later namesake becomes ``<name>#2`` (a part)."""
    if any(f.domain == "board" and not f.battery for f in found):
        for f in found:  # a Jetson's input rail wins the name board over a battery
            if f.battery:
                f.domain = "battery"
    taken: set[str] = set()
    for f in found:
        if f.domain in taken:
            n = 2
            while f"{f.domain}#{n}" in taken:
                n += 1
            f.domain = f"{f.domain}#{n}"
        taken.add(f.domain)


def _interval_s(path: Path, default_s: float) -> float:
    """A period from a file in milliseconds (hwmon ``update_interval``, ``power1_average_interval``)."""
    try:
        ms = read_int(path)
    except SensorError:
        return default_s
    return ms / 1000 if ms > 0 else default_s


# ---------------------------------------------------------------------- generic hwmon
def _hwmon_device(dev: Path, name: str, rapl_present: bool) -> list[_Found]:
    channels: dict[tuple[str, int], dict[str, Path]] = {}
    for p in dev.iterdir():
        m = _CHANNEL_RE.match(p.name)
        if m:
            channels.setdefault((m.group(1), int(m.group(2))), {})[m.group(3)] = p
    period_s = _interval_s(dev / "update_interval", HWMON_PERIOD_S)
    out: list[_Found] = []
    energy_labels: set[str] = set()
    for (kind, n), files in sorted(channels.items()):
        label = _label(dev / f"{kind}{n}_label") or f"{kind}{n}"
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
            out.append(_Found(domain, COUNTER, period_s, lambda p=path: _EnergyCounter(p)))
            continue
        if label in energy_labels or f"energy{n}" in energy_labels:
            continue  # the same sensor as an energy counter, which is better
        path = files.get("input") or files["average"]
        if name == "power_meter":
            domain = "system"
            p_s = _interval_s(dev / f"power{n}_average_interval", ACPI_PERIOD_S)
        else:
            domain = f"hwmon:{name}:{label}"
            p_s = _interval_s(dev / f"power{n}_average_interval", period_s)
        out.append(_Found(domain, POWER, p_s, lambda p=path: _PowerFile(p, 1e-6)))
    return out


def _label(path: Path) -> str:
    try:
        text = read_text(path)
    except SensorError:
        return ""
    return re.sub(r"[\s:]+", "_", text)


# ---------------------------------------------------------------------- Jetson INA3221
def _rail_domain(rail: str) -> str:
    return "board" if rail in BOARD_RAILS else f"rail:{rail.lower()}"


def _usable_rail(rail: str) -> bool:
    return bool(rail) and rail.upper() not in ("NC", "N/A")


def _ina3221_jp5(dev: Path) -> list[_Found]:
    """JetPack 5+: the mainline hwmon driver; bus voltage in mV and current in mA per channel."""
    period_s = _interval_s(dev / "update_interval", INA3221_PERIOD_S)
    out = []
    for label_path in sorted(dev.glob("in*_label"), key=_natural):
        m = _JP5_LABEL_RE.match(label_path.name)
        rail = _label(label_path) if m else ""
        if not _usable_rail(rail):
            continue
        n = m.group(1)
        volt, curr = dev / f"in{n}_input", dev / f"curr{n}_input"
        if not curr.exists():
            continue  # a shunt-voltage or sum channel, not a rail
        out.append(
            _Found(
                _rail_domain(rail),
                POWER,
                period_s,
                lambda v=volt, c=curr: _VoltsTimesAmps(v, c, 1e-6),
            )
        )
    return out


def _ina3221_jp4(dev: Path) -> list[_Found]:
    """JetPack 4: NVIDIA's ina3221x iio driver; ``in_powerN_input`` in mW."""
    out = []
    for name_path in sorted(dev.glob("rail_name_*"), key=_natural):
        m = _JP4_RAIL_RE.match(name_path.name)
        rail = _label(name_path) if m else ""
        if not _usable_rail(rail):
            continue
        power = dev / f"in_power{m.group(1)}_input"
        out.append(
            _Found(_rail_domain(rail), POWER, INA3221_PERIOD_S, lambda p=power: _PowerFile(p, 1e-3))
        )
    return out


# ---------------------------------------------------------------------- battery
def _batteries() -> list[_Found]:
    batteries = []
    for bat in sorted(sysfs_path("class", "power_supply").glob("BAT*"), key=_natural):
        try:
            if read_text(bat / "type") == "Battery":
                batteries.append(bat)
        except SensorError:
            continue
    if not batteries:
        return []
    found = _Found("board", POWER, BATTERY_PERIOD_S, lambda: _Batteries(batteries), battery=True)
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
