"""Builders of fake sysfs trees for the sensor tests (point ``HARNESS_SYSFS`` at ``root``).

The trees copy the real layout where the readers depend on it: class/ entries are symlinks into
devices/, JetPack 5 INA3221 folders are reachable both from the i2c driver and from class/hwmon.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

#: a real max_energy_range_uj (2^38 µJ scaled by the energy unit of many Intel packages)
REAL_MAX_RANGE_UJ = 262143328850


def write_counter(path: Path, value: float) -> None:
    """Rewrite a sysfs file's content in place.

    The sources hold the file open and re-read it with pread, so the inode must stay the same
    (never write a new file and rename it). The new text is written over the old one, then the
    file is cut to its length: a reader never sees an empty file (as it could between the
    truncate and the write of ``open(path, "w")``), at worst the new digits followed by a stale
    tail after a newline, which the readers ignore as sysfs never has one.
    """
    data = f"{int(value)}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{content}\n")
    return path


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


# ---------------------------------------------------------------------- RAPL
def _zone(
    root: Path, dev: Path, name: str, energy_uj: int, max_range_uj: int, max_power_uw: int | None
) -> Path:
    _write(dev / "name", name)
    _write(dev / "energy_uj", energy_uj)
    _write(dev / "max_energy_range_uj", max_range_uj)
    _write(dev / "enabled", 1)
    if max_power_uw is not None:
        _write(dev / "constraint_0_name", "long_term")
        _write(dev / "constraint_0_max_power_uw", max_power_uw)
    link = root / "class" / "powercap" / dev.name
    _link(link, dev)
    return link / "energy_uj"  # the path the source reads, and names in its messages


def make_rapl(
    root: Path,
    sockets: int = 2,
    dram: bool = True,
    psys: bool = True,
    core: bool = True,
    uncore: bool = False,
    mmio: bool = False,
    max_range_uj: int = REAL_MAX_RANGE_UJ,
    max_power_uw: int | None = None,
    energy_uj: int = 1_000_000,
    dies: int = 1,
) -> dict[str, Path]:
    """A powercap tree like the kernel's; returns the ``energy_uj`` path of each domain.

    Subzones are numbered as on real machines (core, uncore, dram in that order when present);
    psys is the zone after the packages; ``mmio`` adds ``intel-rapl-mmio:0`` repeating package-0.
    ``dies`` > 1: each package is that many zones ``package-S-die-D`` (numbered one after the
    other, as the kernel numbers them), each with its subzones; paths are keyed ``cpu:S/die-D``
    (and ``dram:S/die-D``...), the first die's also plainly.
    """
    if dies > 1:
        return _make_rapl_dies(
            root, sockets, dies, dram, core, max_range_uj, max_power_uw, energy_uj
        )
    devices = root / "devices" / "virtual" / "powercap"
    _write(devices / "intel-rapl" / "enabled", 1)
    _link(root / "class" / "powercap" / "intel-rapl", devices / "intel-rapl")
    paths: dict[str, Path] = {}
    for s in range(sockets):
        pkg = devices / "intel-rapl" / f"intel-rapl:{s}"
        paths[f"cpu:{s}"] = _zone(root, pkg, f"package-{s}", energy_uj, max_range_uj, max_power_uw)
        wanted = {"core": core, "uncore": uncore, "dram": dram}
        for m, name in enumerate(n for n, on in wanted.items() if on):
            if name == "dram":
                domain = "dram" if sockets == 1 else f"dram:{s}"
            else:
                domain = f"cpu:{s}:{name}"
            paths[domain] = _zone(
                root, pkg / f"intel-rapl:{s}:{m}", name, energy_uj, max_range_uj, None
            )
    if psys:
        zone = devices / "intel-rapl" / f"intel-rapl:{sockets}"
        paths["system"] = _zone(root, zone, "psys", energy_uj, max_range_uj, max_power_uw)
    if mmio:
        zone = devices / "intel-rapl-mmio" / "intel-rapl-mmio:0"
        paths["mmio:cpu:0"] = _zone(root, zone, "package-0", energy_uj, max_range_uj, None)
    return paths


def _make_rapl_dies(root, sockets, dies, dram, core, max_range_uj, max_power_uw, energy_uj):
    devices = root / "devices" / "virtual" / "powercap"
    _write(devices / "intel-rapl" / "enabled", 1)
    _link(root / "class" / "powercap" / "intel-rapl", devices / "intel-rapl")
    paths: dict[str, Path] = {}
    index = 0
    for s in range(sockets):
        for d in range(dies):
            pkg = devices / "intel-rapl" / f"intel-rapl:{index}"
            key = f"cpu:{s}/die-{d}"
            paths[key] = _zone(
                root, pkg, f"package-{s}-die-{d}", energy_uj, max_range_uj, max_power_uw
            )
            wanted = {"core": core, "dram": dram}
            for m, name in enumerate(n for n, on in wanted.items() if on):
                domain = f"dram:{s}" if name == "dram" and sockets > 1 else name
                domain = f"cpu:{s}:core" if name == "core" else domain
                paths[f"{domain}/die-{d}"] = _zone(
                    root, pkg / f"intel-rapl:{index}:{m}", name, energy_uj, max_range_uj, None
                )
            index += 1
    for key in list(paths):
        if key.endswith("/die-0"):
            paths[key.removesuffix("/die-0")] = paths[key]
    return paths


def make_rapl_amd(
    root: Path, sockets: int = 1, dies: int = 1, energy_uj: int = 1_000_000
) -> dict[str, Path]:
    """An AMD Zen powercap tree: packages (per die when ``dies`` > 1) and core subzones only.

    AMD's RAPL has no power limits, so no ``constraint_*`` files; no DRAM, no psys; the energy
    unit makes the range 2^32 × 15.3 µJ.
    """
    return make_rapl(
        root,
        sockets=sockets,
        dram=False,
        psys=False,
        core=True,
        max_range_uj=AMD_MAX_RANGE_UJ,
        max_power_uw=None,
        energy_uj=energy_uj,
        dies=dies,
    )


#: AMD Zen's max_energy_range_uj: a 32-bit counter in units of 15.3 µJ
AMD_MAX_RANGE_UJ = 65712999613


class CounterWriter(threading.Thread):
    """Advances fake energy_uj files at ``watts`` in real time, every ``period_s``, wrapping.

    Every path in ``paths`` gets the same value (one counter seen through several zones).
    ``reset_after_s``: once, that long after the start, the counter drops to 0 and counts on
    from there, as after a suspend and resume. ``total_uj`` is the energy truly drawn.
    """

    def __init__(
        self,
        paths: Path | list[Path],
        watts: float,
        max_range_uj: int = REAL_MAX_RANGE_UJ,
        period_s: float = 0.005,
        reset_after_s: float | None = None,
    ):
        super().__init__(daemon=True)
        self.paths = [paths] if isinstance(paths, Path) else list(paths)
        self.watts, self.max_range_uj, self.period_s = watts, max_range_uj, period_s
        self.reset_after_s = reset_after_s
        self.stop = threading.Event()
        self.total_uj = 0.0
        self.started_t = 0.0
        self.reset_t: float | None = None

    def run(self) -> None:
        raw = int(self.paths[0].read_text())
        last = self.started_t = time.perf_counter()
        while not self.stop.wait(self.period_s):
            now = time.perf_counter()
            step_uj = int(self.watts * 1e6 * (now - last))
            last += step_uj / (self.watts * 1e6)  # carry the rounding into the next step
            self.total_uj += step_uj
            raw = (raw + step_uj) % self.max_range_uj
            if (
                self.reset_after_s is not None
                and self.reset_t is None
                and now - self.started_t >= self.reset_after_s
            ):
                raw, self.reset_t = 0, now
            for path in self.paths:
                write_counter(path, raw)

    def __enter__(self) -> CounterWriter:
        self.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join()


# ---------------------------------------------------------------------- thermal
def make_coretemp(root: Path, packages: dict[int, float] | None = None) -> dict[int, Path]:
    """Intel coretemp: ``Package id N`` temperatures (m°C); returns each package's input path."""
    packages = packages if packages is not None else {0: 45.0}
    dev = _new_hwmon(root, root / "devices" / "platform" / "coretemp.0", "coretemp")
    paths = {}
    for n, (pkg, celsius) in enumerate(packages.items(), start=1):
        _write(dev / f"temp{n}_label", f"Package id {pkg}")
        paths[pkg] = _write(dev / f"temp{n}_input", int(celsius * 1000))
    _write(dev / f"temp{len(packages) + 1}_label", "Core 0")
    _write(dev / f"temp{len(packages) + 1}_input", 40000)
    return paths


def make_cpufreq(root: Path, khz: list[int], max_khz: int | None = None) -> list[Path]:
    """cpufreq policies with ``scaling_cur_freq`` (kHz), and ``cpuinfo_max_freq`` if
    ``max_khz``; returns the current-frequency paths."""
    base = root / "devices" / "system" / "cpu" / "cpufreq"
    if max_khz is not None:
        for n in range(len(khz)):
            _write(base / f"policy{n}" / "cpuinfo_max_freq", max_khz)
    return [_write(base / f"policy{n}" / "scaling_cur_freq", f) for n, f in enumerate(khz)]


def make_cpufreq_policies(
    root: Path,
    cpus: int = 2,
    max_khz: int = 3_000_000,
    cur_khz: int = 2_000_000,
    cpuinfo_khz: tuple[int, int] = (800_000, 3_600_000),
    min_khz: int = 800_000,
    governor: str = "powersave",
    governors: tuple[str, ...] = ("performance", "powersave"),
) -> list[Path]:
    """One cpufreq policy per CPU, as intel_pstate or acpi-cpufreq lay them out; returns the
    policy folders.

    ``devices/system/cpu/cpufreq/policyN/`` holds the files; ``devices/system/cpu/cpuN/cpufreq``
    links to its policy, as in the kernel's tree.
    """
    base = root / "devices" / "system" / "cpu"
    folders = []
    for n in range(cpus):
        policy = base / "cpufreq" / f"policy{n}"
        _write(policy / "affected_cpus", n)
        _write(policy / "related_cpus", n)
        _write(policy / "cpuinfo_min_freq", cpuinfo_khz[0])
        _write(policy / "cpuinfo_max_freq", cpuinfo_khz[1])
        _write(policy / "scaling_min_freq", min_khz)
        _write(policy / "scaling_max_freq", max_khz)
        _write(policy / "scaling_cur_freq", cur_khz)
        _write(policy / "scaling_governor", governor)
        _write(policy / "scaling_available_governors", " ".join(governors))
        _write(policy / "scaling_driver", "intel_pstate")
        _link(base / f"cpu{n}" / "cpufreq", policy)
        folders.append(policy)
    return folders


# ---------------------------------------------------------------------- hwmon
def _new_hwmon(root: Path, device: Path, name: str) -> Path:
    """An hwmon folder under ``device`` linked from class/hwmon as the next free hwmonN.

    Returns the class/hwmon path, which the source reads and names in its messages.
    """
    cls = root / "class" / "hwmon"
    n = 0
    while (cls / f"hwmon{n}").exists() or (cls / f"hwmon{n}").is_symlink():
        n += 1
    dev = device / "hwmon" / f"hwmon{n}"
    _write(dev / "name", name)
    _link(cls / f"hwmon{n}", dev)
    return cls / f"hwmon{n}"


def make_acpi_power_meter(root: Path, watts: float = 150.0, interval_ms: int | None = 1000) -> Path:
    """The ACPI power meter (ACPI000D); returns its ``power1_average`` path (µW)."""
    dev = _new_hwmon(root, root / "devices" / "LNXSYSTM:00" / "ACPI000D:00", "power_meter")
    if interval_ms is not None:
        _write(dev / "power1_average_interval", interval_ms)
    return _write(dev / "power1_average", int(watts * 1e6))


def make_hwmon_energy(root: Path, name: str = "amd_energy", channels: dict | None = None) -> dict:
    """An hwmon device with ``energyN_input`` counters; ``channels``: label -> µJ. Returns paths."""
    channels = channels if channels is not None else {"Esocket0": 5_000_000}
    dev = _new_hwmon(root, root / "devices" / "platform" / f"{name}.0", name)
    paths = {}
    for n, (label, uj) in enumerate(channels.items(), start=1):
        _write(dev / f"energy{n}_label", label)
        paths[label] = _write(dev / f"energy{n}_input", uj)
    return paths


def make_hwmon_power(
    root: Path, name: str = "fakepower", watts: float = 10.0, label: str | None = None
) -> Path:
    """An hwmon device with one ``power1_input`` (µW); returns its path."""
    dev = _new_hwmon(root, root / "devices" / "platform" / f"{name}.0", name)
    if label is not None:
        _write(dev / "power1_label", label)
    return _write(dev / "power1_input", int(watts * 1e6))


def make_jetson_jp5(root: Path, rails: dict[str, tuple[int, int]] | None = None) -> dict:
    """A JetPack 5 INA3221 (hwmon driver); ``rails``: label -> (mV, mA). Returns (volt, curr) paths.

    Reachable as bus/i2c/drivers/ina3221/1-0040/hwmon/hwmonN and as class/hwmon/hwmonN.
    """
    rails = rails or {"VDD_IN": (5000, 1200), "VDD_CPU_GPU_CV": (5000, 400), "VDD_SOC": (5000, 300)}
    chip = root / "devices" / "platform" / "3160000.i2c" / "i2c-1" / "1-0040"
    hwmon = _new_hwmon(root, chip, "ina3221").resolve().name
    driver = root / "bus" / "i2c" / "drivers" / "ina3221" / "1-0040"
    _link(driver, chip)
    dev = driver / "hwmon" / hwmon  # the path the source reads first
    _write(dev / "update_interval", 10)
    paths = {}
    for n, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        _write(dev / f"in{n}_label", label)
        paths[label] = (_write(dev / f"in{n}_input", mv), _write(dev / f"curr{n}_input", ma))
        _write(dev / f"in{n + 3}_input", 20)  # the shunt voltage channel, unlabelled
    _write(dev / "in7_label", "sum of shunt voltages")
    _write(dev / "in7_input", 60)
    return paths


def make_jetson_jp4(root: Path, rails: dict[str, int] | None = None) -> dict:
    """A JetPack 4 INA3221 (ina3221x iio driver); ``rails``: name -> mW. Returns power paths."""
    rails = rails or {"POM_5V_IN": 4200, "POM_5V_GPU": 900, "POM_5V_CPU": 1100}
    chip = root / "devices" / "7000c400.i2c" / "i2c-6" / "6-0040"
    _link(root / "bus" / "i2c" / "drivers" / "ina3221x" / "6-0040", chip)
    dev = chip / "iio:device0"
    paths = {}
    for n, (name, mw) in enumerate(rails.items()):
        _write(dev / f"rail_name_{n}", name)
        _write(dev / f"in_voltage{n}_input", 5000)
        _write(dev / f"in_current{n}_input", int(mw * 1000 / 5000))
        paths[name] = _write(dev / f"in_power{n}_input", mw)
    return paths


def make_battery(
    root: Path,
    name: str = "BAT0",
    status: str = "Discharging",
    voltage_uv: int = 12_000_000,
    current_ua: int = 1_500_000,
    power_uw: int | None = None,
) -> Path:
    """A battery under class/power_supply; returns its folder."""
    bat = root / "devices" / "LNXSYSTM:00" / "PNP0C0A:00" / "power_supply" / name
    _write(bat / "type", "Battery")
    _write(bat / "status", status)
    _write(bat / "voltage_now", voltage_uv)
    _write(bat / "current_now", current_ua)
    if power_uw is not None:
        _write(bat / "power_now", power_uw)
    _link(root / "class" / "power_supply" / name, bat)
    return bat
