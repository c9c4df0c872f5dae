"""What the hwmon, Jetson and battery sources share: sysfs power files, opened once and re-read.

Each source scans its own part of the tree into ``Found`` domains, each with a ``make`` that opens
its reader; ``SysfsPowerSource`` probes, opens and reads them, and turns a domain whose read
fails into a missing value with its reason (the meter drops a domain that keeps failing and
keeps the rest).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError
from harness.sensors.base import (
    COUNTER,
    MEASURED,
    NO_PERMISSION,
    OK,
    POWER,
    UNAVAILABLE,
    CounterUnwrapper,
    DomainStatus,
    Source,
)
from harness.sysfs import IntFile, SensorReadError, read_int, read_text

#: watts no hwmon energy counter is assumed to exceed: the bound a reset's new count must fit
ENERGY_COUNTER_MAX_W = 5000.0


# ---------------------------------------------------------------------- readers
class Reader:
    """Opened files of one domain; ``value`` is watts (power) or monotonic joules (counter)."""

    files: tuple[IntFile, ...] = ()

    def value(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        for f in self.files:
            f.close()


class PowerFile(Reader):
    def __init__(self, path: Path, w_per_unit: float):
        self._file = IntFile(path)
        self.files = (self._file,)
        self._w_per_unit = w_per_unit

    def value(self) -> float:
        return self._file.read() * self._w_per_unit


class VoltsTimesAmps(Reader):
    """Bus voltage × current, each in its own file (INA3221 mV and mA; battery µV and µA)."""

    def __init__(self, volt_path: Path, curr_path: Path, w_per_unit: float):
        self._volt = IntFile(volt_path)
        self._curr = IntFile(curr_path)
        self.files = (self._volt, self._curr)
        self._w_per_unit = w_per_unit

    def value(self) -> float:
        # some battery drivers report the discharge current as negative
        return abs(self._volt.read() * self._curr.read()) * self._w_per_unit


class EnergyCounter(Reader):
    """An hwmon energy counter in µJ. No wrap range is published: a step back is a reset."""

    def __init__(self, path: Path, domain: str = "?", events: list[str] | None = None):
        self._file = IntFile(path)
        self.files = (self._file,)
        self._unwrap = CounterUnwrapper(
            None,
            self._file.read(),
            domain=domain,
            max_power=ENERGY_COUNTER_MAX_W * 1e6,
            now_s=time.perf_counter(),
            events=events,
        )

    def value(self) -> float:
        return self._unwrap.update(self._file.read(), time.perf_counter()) / 1e6


# ---------------------------------------------------------------------- what a probe finds
@dataclass
class Found:
    """One domain found by a probe; ``make`` opens its reader (and raises SensorError if it can't)."""

    domain: str
    kind: str
    #: the period assumed until ``period_files`` are read (the device kind's usual one)
    update_period_s: float
    make: Callable[[], Reader] | None
    status: str = OK
    reason: str = ""
    #: files stating the period in ms, tried in order; read in the meter's background, since
    #: some (the ACPI meter's ``power1_average_interval``) run firmware code on each read
    period_files: tuple[Path, ...] = ()


class SysfsPowerSource(Source):
    """A source of sysfs energy and power files (measured); subclasses say how to find them."""

    method = MEASURED
    default_period_s = 0.1

    def __init__(self) -> None:
        self.update_period_s = self.default_period_s
        self._found: list[Found] | None = None
        self._counters: list[tuple[str, Reader]] = []
        self._powers: list[tuple[str, Reader]] = []
        self._periods: dict[str, float] = {}

    def scan(self) -> list[Found]:
        raise NotImplementedError

    def nothing_found(self) -> str:
        return "nothing found"

    def probe(self) -> list[DomainStatus]:
        try:
            self._found = self.scan()
        except Exception as e:  # probe never raises: an odd tree is a row, not a traceback
            self._found = [Found(self.name, POWER, 0.0, None, UNAVAILABLE, f"cannot scan: {e}")]
        for f in self._found:
            if f.status == OK and f.make is not None:
                try_open(f)
        return self._rows()

    def _rows(self) -> list[DomainStatus]:
        if not self._found:
            return [DomainStatus(self.name, self.name, POWER, UNAVAILABLE, self.nothing_found())]
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
            if isinstance(reader, EnergyCounter):
                reader._unwrap.domain, reader._unwrap._events = f.domain, self.events
            (self._counters if f.kind == COUNTER else self._powers).append((f.domain, reader))
            self._periods.setdefault(f.domain, f.update_period_s)
            periods.append(self._periods[f.domain])
        self.update_period_s = max(periods, default=self.default_period_s)

    def learn_update_periods(self) -> dict[str, float]:
        """The periods the devices state (``update_interval``, ``power*_average_interval``)."""
        learned: dict[str, float] = {}
        for f in self._found or []:
            if f.status == OK and f.period_files:
                learned[f.domain] = stated_period_s(f.period_files, f.update_period_s)
        self._periods.update(learned)
        if self._periods:
            self.update_period_s = max(self._periods.values())
        return learned

    def counter_domains(self) -> list[str]:
        return [d for d, _ in self._counters]

    def power_domains(self) -> list[str]:
        return [d for d, _ in self._powers]

    def domain_update_period_s(self, domain: str) -> float:
        return self._periods.get(domain, self.update_period_s)

    def _values(self, readers: list[tuple[str, Reader]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for d, r in readers:
            try:
                out[d] = r.value()
            except SensorError as e:
                self.fail(d, str(e), isinstance(e, SensorReadError) and e.gone)
        return out

    def read_energy_j(self) -> dict[str, float]:
        return self._values(self._counters)

    def read_power_w(self) -> dict[str, float]:
        return self._values(self._powers)

    def drop(self, domain: str) -> None:
        for readers in (self._counters, self._powers):
            for entry in [e for e in readers if e[0] == domain]:
                entry[1].close()
                readers.remove(entry)

    def close(self) -> None:
        for _, r in self._counters + self._powers:
            r.close()
        self._counters, self._powers = [], []


def try_open(found: Found) -> None:
    """Open and close the domain's files once, so the probe reports what a read would meet."""
    try:
        found.make().close()
    except SensorPermissionError as e:
        found.status, found.reason = NO_PERMISSION, f"{e} (needs read access to that file)"
    except SensorError as e:
        found.status, found.reason = UNAVAILABLE, str(e)


def natural(p: Path) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name))


def stated_period_s(paths: tuple[Path, ...], default_s: float) -> float:
    """The period the first readable of ``paths`` states in milliseconds (hwmon
    ``update_interval``, ``power1_average_interval``), else ``default_s``."""
    for path in paths:
        try:
            ms = read_int(path)
        except SensorError:
            continue
        if ms > 0:
            return ms / 1000
    return default_s


def label_of(path: Path) -> str:
    try:
        text = read_text(path)
    except SensorError:
        return ""
    return re.sub(r"[\s:]+", "_", text)
