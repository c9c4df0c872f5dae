"""RAPL energy counters of Intel and AMD CPUs, read from the powercap tree.

``$HARNESS_SYSFS/class/powercap/intel-rapl:N`` is a zone (a package, or ``psys``) and
``intel-rapl:N:M`` a subzone of it (``core``, ``uncore``, ``dram``). AMD Zen kernels expose the same
tree under the same names, sometimes with only ``package`` and ``core``. Each zone's ``energy_uj``
is a counter in microjoules that wraps at ``max_energy_range_uj``. ``intel-rapl-mmio:N`` zones
repeat a package through another interface; a package is taken once, from MSR ``intel-rapl``.

Domains: ``package-N`` -> ``cpu:N``; ``psys`` -> ``system``; subzones ``core`` -> ``cpu:N:core``,
``uncore`` -> ``cpu:N:uncore``; ``dram`` -> ``dram`` on one socket, ``dram:N`` on several.
``psys`` yields the name ``system`` to an ACPI power meter (read by hwmon at the machine's input)
and becomes the part ``rapl:psys``; a psys counter that reads 0 is not wired up and unavailable.

Multi-die packages: kernels name one zone per die, ``package-N-die-M`` (Intel Cascade Lake-AP,
AMD per CCD). They are socket N, and their sum is ``cpu:N``; but on many machines (AMD above all)
every die zone of a package reads the same package counter. A die zone whose raw value matches an
earlier die's at open is a mirror and counted once (every window says so); should its count later
part from the other's, it was a die of its own after all and is added back, with a warning.

A step back of a counter is a wrap only when the forward distance fits what the zone can draw in
the time since the last read (its stated max power, or ``FALLBACK_MAX_POWER_W``); otherwise it
is a reset (suspend and resume) and the window says so. A ``max_energy_range_uj`` of 0, or below
the counter's value, is not trusted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError
from harness.sensors.base import (
    COUNTER,
    MEASURED,
    NO_PERMISSION,
    OK,
    UNAVAILABLE,
    CounterUnwrapper,
    DomainStatus,
    Source,
)
from harness.sysfs import IntFile, SensorReadError, read_int, read_text, sysfs_path

#: ``intel-rapl:0``, ``intel-rapl:0:1``, ``intel-rapl-mmio:0``
_ZONE_RE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)(?::(\d+))?$")
#: ``package-0``, and per die ``package-0-die-1``
_PACKAGE_RE = re.compile(r"^package-(\d+)(?:-die-(\d+))?$")

#: watts no package (or DRAM, or psys per socket) is assumed to exceed when the zone states no
#: limit: how often to poll for wraps, and the bound a step back must fit to count as a wrap.
#: Generous is safe for both: a reset jumps back by far more than any zone draws in a window.
FALLBACK_MAX_POWER_W = 500.0
#: raw values of two die zones closer than this many seconds at max power: one counter
MIRROR_WINDOW_S = 0.002
#: two mirrored die counts parting by more than this share (and the slack above): two dies
MIRROR_TOLERANCE = 0.02

#: polling for wraps more often than the counter updates (about 1 ms) gains nothing
MIN_POLL_S = 0.001

PERMISSION_HINT = (
    "root-only since CVE-2020-8694; grant read access with "
    "`sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot) or the udev rule "
    "in docs/sensors.md"
)
NO_POWERCAP = (
    "no {path} (not an Intel/AMD CPU, a VM, or a container without the mount; see docs/sensors.md)"
)

DANGLING = (
    "{path} links to a folder that is not there (a container that mounts /sys/class/powercap "
    "alone: mount /sys/devices/virtual/powercap too; see docs/sensors.md)"
)


@dataclass
class _Zone:
    """One powercap zone or subzone as found by a probe."""

    domain: str
    energy_path: Path
    max_range_uj: int | None
    max_power_w: float
    status: str
    reason: str = ""
    #: the zone's own name when it is one die of several (``package-0-die-1``), else ""
    die: str = ""


class _Dies:
    """One domain read from several die zones: their sum, a die that mirrors another once."""

    def __init__(self, domain: str, zones: list[_Zone], now_s: float, events: list[str]):
        self.domain = domain
        self.members: list[tuple[str, IntFile, CounterUnwrapper]] = []
        self.mirror_of: dict[int, int] = {}  # member index -> the earlier member it mirrors
        for z in zones:
            f = IntFile(z.energy_path)
            u = CounterUnwrapper(
                z.max_range_uj,
                f.read(),
                domain=domain,
                max_power=z.max_power_w * 1e6,
                now_s=now_s,
                events=events,
            )
            self.members.append((z.die, f, u))
        self.slack_uj = max(z.max_power_w for z in zones) * 1e6 * MIRROR_WINDOW_S
        raws = [u._last_raw for _, _, u in self.members]
        for j in range(1, len(raws)):
            for i in range(j):
                if i not in self.mirror_of and abs(raws[j] - raws[i]) <= self.slack_uj:
                    self.mirror_of[j] = i
                    break
        self._events = events

    def read_uj(self, now_s: float) -> int:
        counts = [u.update(f.read(), now_s) for _, f, u in self.members]
        for j, i in list(self.mirror_of.items()):
            if abs(counts[j] - counts[i]) > MIRROR_TOLERANCE * max(counts) + self.slack_uj:
                del self.mirror_of[j]  # two dies after all: count both from now on
                self._events.append(
                    f"{self.domain}: {self.members[j][0]} stopped mirroring "
                    f"{self.members[i][0]}; both are counted, earlier windows counted it once"
                )
        return sum(c for k, c in enumerate(counts) if k not in self.mirror_of)

    def notes(self) -> list[str]:
        return [
            f"{self.domain}: {self.members[j][0]} mirrors {self.members[i][0]} (one counter); "
            "counted once"
            for j, i in self.mirror_of.items()
        ]

    def close(self) -> None:
        for _, f, _ in self.members:
            f.close()


class RaplSource(Source):
    """CPU package, core, uncore, DRAM and psys energy from RAPL counters (measured)."""

    name = "rapl"
    method = MEASURED
    update_period_s = 0.001

    def __init__(self) -> None:
        self._zones: list[_Zone] | None = None
        self._rows: list[DomainStatus] = []
        # (domain, file, unwrapper): the whole hot path of read_energy_j
        self._readers: list[tuple[str, IntFile, CounterUnwrapper]] = []
        self._dies: list[_Dies] = []
        self._poll_s: float | None = None

    # ------------------------------------------------------------------ probing
    def probe(self) -> list[DomainStatus]:
        try:
            self._zones, self._rows = _scan()
        except Exception as e:  # probe never raises: an odd tree is a row, not a traceback
            self._zones = []
            self._rows = [self._row("cpu", UNAVAILABLE, f"cannot scan powercap: {e}")]
        return list(self._rows)

    def _row(self, domain: str, status: str, reason: str = "") -> DomainStatus:
        return DomainStatus(self.name, domain, COUNTER, status, reason)

    # ------------------------------------------------------------------ reading
    def open(self) -> None:
        if self._zones is None:
            self.probe()
        self.close()
        now = time.perf_counter()
        by_domain: dict[str, list[_Zone]] = {}
        for zone in self._zones or []:
            if zone.status == OK:
                by_domain.setdefault(zone.domain, []).append(zone)
        for domain, zones in by_domain.items():
            try:
                if len(zones) > 1:
                    self._dies.append(_Dies(domain, zones, now, self.events))
                    continue
                (zone,) = zones
                f = IntFile(zone.energy_path)
            except SensorError:  # gone since the probe: leave it out rather than fail the meter
                continue
            unwrapper = CounterUnwrapper(
                zone.max_range_uj,
                f.read(),
                domain=domain,
                max_power=zone.max_power_w * 1e6,
                now_s=now,
                events=self.events,
            )
            self._readers.append((domain, f, unwrapper))
        periods = [
            z.max_range_uj / (z.max_power_w * 1e6)
            for z in self._zones or []
            if z.status == OK and z.max_range_uj
        ]
        self._poll_s = max(MIN_POLL_S, min(periods) / 4) if periods else None

    def counter_domains(self) -> list[str]:
        return [domain for domain, _, _ in self._readers] + [d.domain for d in self._dies]

    def read_energy_j(self) -> dict[str, float]:
        now = time.perf_counter()
        try:
            out = {domain: u.update(f.read(), now) / 1e6 for domain, f, u in self._readers}
        except SensorError:  # one zone failed: read them one by one and report that one
            out = {}
            for domain, f, u in self._readers:
                try:
                    out[domain] = u.update(f.read(), now) / 1e6
                except SensorError as e:
                    self.fail(domain, str(e), isinstance(e, SensorReadError) and e.gone)
        for dies in self._dies:
            try:
                out[dies.domain] = dies.read_uj(now) / 1e6
            except SensorError as e:
                self.fail(dies.domain, str(e), isinstance(e, SensorReadError) and e.gone)
        return out

    def window_notes(self) -> list[str]:
        """What holds for every window: die zones that mirror another and are counted once."""
        return [note for dies in self._dies for note in dies.notes()]

    def poll_interval_s(self) -> float | None:
        """A quarter of the shortest wrap period at the zones' maximum power."""
        return self._poll_s

    def drop(self, domain: str) -> None:
        for entry in [r for r in self._readers if r[0] == domain]:
            entry[1].close()
            self._readers.remove(entry)
        for dies in [d for d in self._dies if d.domain == domain]:
            dies.close()
            self._dies.remove(dies)

    def close(self) -> None:
        for _, f, _ in self._readers:
            f.close()
        for dies in self._dies:
            dies.close()
        self._readers = []
        self._dies = []


# ---------------------------------------------------------------------- the tree
def _scan() -> tuple[list[_Zone], list[DomainStatus]]:
    base = sysfs_path("class", "powercap")
    entries = []
    for p in _zone_dirs(base):
        m = _ZONE_RE.match(p.name)
        sub = int(m.group(3)) if m.group(3) is not None else -1
        entries.append((m.group(1) == "intel-rapl-mmio", int(m.group(2)), sub, p))
    if not entries:
        dangling = sorted(base.glob("intel-rapl*:*"))
        if dangling:
            reason = DANGLING.format(path=dangling[0])
        else:
            reason = NO_POWERCAP.format(path=base / "intel-rapl" if base.is_dir() else base)
        return [], [DomainStatus("rapl", "cpu", COUNTER, UNAVAILABLE, reason)]
    entries.sort(key=lambda e: e[:3])  # MSR zones first, then by index: parents before children

    rows: list[DomainStatus] = []
    zones: list[_Zone] = []
    names: dict[tuple[bool, int], str] = {}  # (mmio, zone index) -> zone name
    msr_names: set[str] = set()
    skipped: set[tuple[bool, int]] = set()  # mmio zones that repeat an MSR one
    for mmio, index, sub, path in entries:
        if sub < 0:
            try:
                names[(mmio, index)] = read_text(path / "name")
            except SensorError as e:
                rows.append(DomainStatus("rapl", f"rapl:{path.name}", COUNTER, UNAVAILABLE, str(e)))
                continue
            if mmio and names[(mmio, index)] in msr_names:
                skipped.add((mmio, index))
            elif not mmio:
                msr_names.add(names[(mmio, index)])
    packages = {(m.group(1), m.group(2)) for n in names.values() if (m := _PACKAGE_RE.match(n))}
    sockets = len({socket for socket, _ in packages}) or 1

    taken: dict[str, bool] = {}  # domain -> read from a die zone
    for mmio, index, sub, path in entries:
        if (mmio, index) in skipped or (mmio, index) not in names:
            continue
        parent = names[(mmio, index)]
        m = _PACKAGE_RE.match(parent)
        socket = int(m.group(1)) if m else index
        die = parent if m and m.group(2) is not None else ""
        if sub < 0:
            name = parent
        else:
            try:
                name = read_text(path / "name")
            except SensorError as e:
                rows.append(DomainStatus("rapl", f"rapl:{path.name}", COUNTER, UNAVAILABLE, str(e)))
                continue
            if die:
                die = f"{parent}/{name}"
        domain = _domain(name, socket, sub >= 0, sockets)
        if domain == "system" and _has_acpi_power_meter():
            domain = "rapl:psys"  # the ACPI meter (hwmon) measures the whole machine at its input
        if domain in taken and not (die and taken[domain]):
            reason = f"{path} repeats the zone already read as {domain}"
            rows.append(DomainStatus("rapl", domain, COUNTER, UNAVAILABLE, reason))
            continue
        first = domain not in taken
        taken[domain] = bool(die)
        zone = _probe_zone(domain, path, sockets if domain == "system" else 1)
        zone.die = die
        zones.append(zone)
        if first:
            rows.append(DomainStatus("rapl", domain, COUNTER, zone.status, zone.reason))
        else:  # a further die of the same package: one row per domain, naming its dies
            i = next(k for k, r in enumerate(rows) if r.domain == domain)
            dies = [z.die for z in zones if z.domain == domain]
            note = f"from die zones {', '.join(dies)} (a die mirroring another is counted once)"
            reason = "; ".join(t for t in (rows[i].reason.split("; from die")[0], note) if t)
            status = rows[i].status if rows[i].status != OK else zone.status
            rows[i] = DomainStatus("rapl", domain, COUNTER, status, reason)
    return zones, rows


def _zone_dirs(base: Path) -> list[Path]:
    """Every zone folder, by name, whether listed flat (class/powercap/intel-rapl:0:0, links into
    devices/) or only nested (intel-rapl/intel-rapl:0/intel-rapl:0:0, as in a container that
    mounts class/powercap/intel-rapl alone)."""
    found: dict[str, Path] = {}
    folders = [base, base / "intel-rapl", base / "intel-rapl-mmio"]
    while folders:
        folder = folders.pop(0)
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if _ZONE_RE.match(p.name) and p.name not in found and p.is_dir():
                found[p.name] = p
                folders.append(p)  # its subzones
    return list(found.values())


def _domain(name: str, socket: int, is_subzone: bool, sockets: int) -> str:
    if name == "dram":
        return "dram" if sockets == 1 else f"dram:{socket}"
    if is_subzone:
        return f"cpu:{socket}:{name}"
    if name == "psys":
        return "system"
    if _PACKAGE_RE.match(name):
        return f"cpu:{socket}"
    return f"rapl:{name}"


def _has_acpi_power_meter() -> bool:
    """Whether hwmon offers an ACPI power meter, which then keeps the name ``system``."""
    for p in sysfs_path("class", "hwmon").glob("hwmon*/name"):
        try:
            if read_text(p) == "power_meter":
                return True
        except SensorError:
            pass
    return False


def _probe_zone(domain: str, path: Path, packages: int) -> _Zone:
    energy = path / "energy_uj"
    zone = _Zone(domain, energy, None, FALLBACK_MAX_POWER_W * packages, OK)
    try:
        counter = IntFile(energy)
        value_uj = counter.read()
        counter.close()
    except SensorPermissionError as e:
        zone.status, zone.reason = NO_PERMISSION, f"{e} ({PERMISSION_HINT})"
        return zone
    except SensorError as e:
        zone.status, zone.reason = UNAVAILABLE, str(e)
        return zone
    if domain == "system" and value_uj == 0:
        # psys exists on many boards that do not wire it up; its counter then stays at 0
        zone.status = UNAVAILABLE
        zone.reason = f"{energy} reads 0: this platform does not report psys"
        return zone
    try:
        max_range_uj = read_int(path / "max_energy_range_uj")
    except SensorError as e:
        zone.reason = f"{e}: wraparound cannot be undone; a step back counts as a reset"
    else:
        if max_range_uj <= value_uj:  # 0, or below what the counter already holds
            zone.reason = (
                f"{path / 'max_energy_range_uj'} is {max_range_uj}, not above the counter's "
                f"{value_uj}: not trusted; a step back counts as a reset"
            )
        else:
            zone.max_range_uj = max_range_uj
    limits_w = []
    for p in path.glob("constraint_*_max_power_uw"):
        try:
            limits_w.append(read_int(p) / 1e6)
        except SensorError:
            pass
    if max(limits_w, default=0) > 0:
        zone.max_power_w = max(limits_w)
    return zone
