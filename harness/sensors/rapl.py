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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import SensorError, SensorPermissionError
from harness.sensors.base import (
    COUNTER,
    NO_PERMISSION,
    OK,
    UNAVAILABLE,
    CounterUnwrapper,
    DomainStatus,
    Source,
)
from harness.sysfs import IntFile, read_int, read_text, sysfs_path

#: ``intel-rapl:0``, ``intel-rapl:0:1``, ``intel-rapl-mmio:0``
_ZONE_RE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)(?::(\d+))?$")
_PACKAGE_RE = re.compile(r"^package-(\d+)$")

#: watts no package (or DRAM, or psys per socket) is assumed to exceed when the zone states no
#: limit; only used to decide how often to poll for wraps, so generous is safe
FALLBACK_MAX_POWER_W = 500.0

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


class RaplSource(Source):
    """CPU package, core, uncore, DRAM and psys energy from RAPL counters (measured)."""

    name = "rapl"
    update_period_s = 0.001

    def __init__(self) -> None:
        self._zones: list[_Zone] | None = None
        self._rows: list[DomainStatus] = []
        # (domain, file, unwrapper): the whole hot path of read_energy_j
        self._readers: list[tuple[str, IntFile, CounterUnwrapper]] = []
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
        for zone in self._zones or []:
            if zone.status != OK:
                continue
            try:
                f = IntFile(zone.energy_path)
            except SensorError:  # gone since the probe: leave it out rather than fail the meter
                continue
            self._readers.append((zone.domain, f, CounterUnwrapper(zone.max_range_uj, f.read())))
        periods = [
            z.max_range_uj / (z.max_power_w * 1e6)
            for z in self._zones or []
            if z.status == OK and z.max_range_uj
        ]
        self._poll_s = max(MIN_POLL_S, min(periods) / 4) if periods else None

    def counter_domains(self) -> list[str]:
        return [domain for domain, _, _ in self._readers]

    def read_energy_j(self) -> dict[str, float]:
        return {domain: u.update(f.read()) / 1e6 for domain, f, u in self._readers}

    def poll_interval_s(self) -> float | None:
        """A quarter of the shortest wrap period at the zones' maximum power."""
        return self._poll_s

    def close(self) -> None:
        for _, f, _ in self._readers:
            f.close()
        self._readers = []


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
    sockets = len({n for n in names.values() if n.startswith("package")}) or 1

    taken: set[str] = set()
    for mmio, index, sub, path in entries:
        if (mmio, index) in skipped or (mmio, index) not in names:
            continue
        parent = names[(mmio, index)]
        m = _PACKAGE_RE.match(parent)
        socket = int(m.group(1)) if m else index
        if sub < 0:
            name = parent
        else:
            try:
                name = read_text(path / "name")
            except SensorError as e:
                rows.append(DomainStatus("rapl", f"rapl:{path.name}", COUNTER, UNAVAILABLE, str(e)))
                continue
        domain = _domain(name, socket, sub >= 0, sockets)
        if domain == "system" and _has_acpi_power_meter():
            domain = "rapl:psys"  # the ACPI meter (hwmon) measures the whole machine at its input
        if domain in taken:
            reason = f"{path} repeats the zone already read as {domain}"
            rows.append(DomainStatus("rapl", domain, COUNTER, UNAVAILABLE, reason))
            continue
        taken.add(domain)
        zone = _probe_zone(domain, path, sockets if domain == "system" else 1)
        zones.append(zone)
        rows.append(DomainStatus("rapl", domain, COUNTER, zone.status, zone.reason))
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
    if name.startswith("package"):
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
        zone.max_range_uj = read_int(path / "max_energy_range_uj") or None
    except SensorError as e:
        zone.reason = f"{e}: wraparound cannot be undone"
    limits_w = []
    for p in path.glob("constraint_*_max_power_uw"):
        try:
            limits_w.append(read_int(p) / 1e6)
        except SensorError:
            pass
    if max(limits_w, default=0) > 0:
        zone.max_power_w = max(limits_w)
    return zone
