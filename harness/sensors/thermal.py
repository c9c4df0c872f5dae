"""Thermal state: the CPU package temperature (hwmon), its frequency and cap (cpufreq), and each
GPU's temperature, clock and power limit (through the GPU device layer, ``gpu_state``).

Read at window edges beside the GPUs' (the NVML source reports its own), so that a measurement
says how hot and how fast the machine was. Package temperatures come from ``coretemp``
(``Package id N``), ``k10temp`` / ``zenpower`` (``Tctl``, ``Tdie``); the frequency is the mean of
``scaling_cur_freq`` over at most ``MAX_POLICIES`` cpufreq policies, so a 128-core machine does
not pay 128 file reads per window edge; the cap (``cpu_max_mhz``) is the highest
``scaling_max_freq`` of the same policies, as the ``cpu_max_mhz`` knob (harness/knobs.py) left it. Files are held open (``IntFile``): a read is ~2 µs.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import SensorError
from harness.sysfs import IntFile, read_text, sysfs_path

MAX_POLICIES = 8
_PACKAGE_RE = re.compile(r"^Package id (\d+)$")
_AMD_LABELS = ("Tctl", "Tdie")
_CPU_TEMP_DRIVERS = ("coretemp", "k10temp", "zenpower")


class CpuThermal:
    """Package temperatures and the mean current frequency; ``find`` is None where none is."""

    name = "cpu-thermal"

    def __init__(self, temps: dict[str, IntFile], freqs: list[IntFile], caps: list[IntFile] = ()):
        self._temps = temps
        self._freqs = freqs
        self._caps = list(caps)

    @classmethod
    def find(cls) -> CpuThermal | None:
        temps: dict[str, IntFile] = {}
        try:
            for dev in sorted(sysfs_path("class", "hwmon").glob("hwmon*")):
                temps.update(_package_temps(dev, temps))
        except OSError:
            pass
        policies = sysfs_path("devices", "system", "cpu", "cpufreq")
        freqs = _policy_files(policies, "scaling_cur_freq")
        caps = _policy_files(policies, "scaling_max_freq")
        return cls(temps, freqs, caps) if temps or freqs or caps else None

    def thermal(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for device, f in self._temps.items():
            try:
                out[device] = {"temp_c": f.read() / 1000.0}
            except SensorError:
                continue
        if self._freqs:
            khz = []
            for f in self._freqs:
                try:
                    khz.append(f.read())
                except SensorError:
                    continue
            if khz:
                out.setdefault("cpu", {})["clock_mhz"] = sum(khz) / len(khz) / 1000.0
        caps = []
        for f in self._caps:
            try:
                caps.append(f.read())
            except SensorError:
                continue
        if caps:
            out.setdefault("cpu", {})["cpu_max_mhz"] = max(caps) / 1000.0
        return out

    def close(self) -> None:
        for f in [*self._temps.values(), *self._freqs, *self._caps]:
            f.close()


def _policy_files(policies: Path, name: str) -> list[IntFile]:
    """``name`` of at most ``MAX_POLICIES`` cpufreq policies, held open."""
    out: list[IntFile] = []
    try:
        for p in sorted(policies.glob(f"policy*/{name}"))[:MAX_POLICIES]:
            try:
                out.append(IntFile(p))
            except SensorError:
                continue
    except OSError:
        pass
    return out


def _package_temps(dev: Path, taken: dict[str, IntFile]) -> dict[str, IntFile]:
    """``cpu:N`` -> the package temperature file of one hwmon device (AMD: one per socket,
    numbered in the order found)."""
    try:
        name = read_text(dev / "name")
    except SensorError:
        return {}
    if name not in _CPU_TEMP_DRIVERS:
        return {}
    out: dict[str, IntFile] = {}
    for label_path in sorted(dev.glob("temp*_label")):
        try:
            label = read_text(label_path)
        except SensorError:
            continue
        m = _PACKAGE_RE.match(label)
        if m:
            device = f"cpu:{m.group(1)}"
        elif label in _AMD_LABELS and not out:  # Tctl and Tdie are the same package
            device = f"cpu:{len(taken)}"
        else:
            continue
        if device in out or device in taken:
            continue
        try:
            out[device] = IntFile(label_path.with_name(label_path.name.replace("_label", "_input")))
        except SensorError:
            continue
    return out


def gpu_state(gpu) -> dict[str, float]:
    """What a GPU (``harness.sensors.gpu.Gpu``) reports of its temperature (°C), SM clock (MHz)
    and enforced power limit (W); a reading the board lacks is left out."""
    state: dict[str, float] = {}
    for key, read in (
        ("temp_c", gpu.temperature_c),
        ("clock_mhz", gpu.sm_clock_mhz),
        ("power_limit_w", gpu.enforced_power_limit_w),
    ):
        try:
            state[key] = float(read())
        except SensorError:  # not every GPU reports every one
            continue
    return state
