"""CPU frequency policies (cpufreq) as knobs: the frequency cap and the governor.

Linux exposes one policy per group of CPUs that share a clock, ``devices/system/cpu/cpufreq/
policyN/`` (each ``cpuN/cpufreq`` links to its policy): ``scaling_max_freq`` and
``scaling_min_freq`` (kHz, writable by root), ``cpuinfo_min_freq`` / ``cpuinfo_max_freq`` (what the
hardware allows), ``scaling_governor`` and ``scaling_available_governors``. A cap is written to
every policy and read back, because the kernel may keep less than was asked (a firmware limit, a
driver's rounding); what it kept is what the harness reports.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import KnobError, KnobPermissionError, SensorError, SensorPermissionError
from harness.sysfs import read_int, read_text, sysfs_path, write_text

_POLICY = re.compile(r"^policy(\d+)$")


def cpufreq_dir() -> Path:
    return sysfs_path("devices", "system", "cpu", "cpufreq")


def policies() -> list[Path]:
    """The cpufreq policy folders that have a frequency cap, in policy order."""
    try:
        found = [p for p in cpufreq_dir().iterdir() if _POLICY.match(p.name)]
    except OSError:
        return []
    found = [p for p in found if (p / "scaling_max_freq").is_file()]
    return sorted(found, key=lambda p: int(_POLICY.match(p.name).group(1)))


def grant_hint(attribute: str) -> str:
    """How to let a non-root user write ``attribute`` of every policy."""
    files = cpufreq_dir() / "policy*" / attribute
    return f"run the harness as root, or let this user write them (sudo chown $USER {files})"


def _no_cpufreq() -> KnobError:
    return KnobError(
        f"no cpufreq here ({cpufreq_dir()} has no policy*/scaling_max_freq): this kernel, VM or "
        "container does not let the CPU frequency be set"
    )


def _write(path: Path, text: str, attribute: str) -> None:
    try:
        write_text(path, text)
    except SensorPermissionError as e:
        raise KnobPermissionError(f"{e}; {grant_hint(attribute)}") from None
    except SensorError as e:
        raise KnobError(str(e)) from None


def _read_int(path: Path) -> int:
    try:
        return read_int(path)
    except SensorError as e:
        raise KnobError(str(e)) from None


class CpuFreq:
    """The machine's cpufreq policies; raises ``KnobError`` at once where there are none."""

    def __init__(self) -> None:
        self.policies = policies()
        if not self.policies:
            raise _no_cpufreq()

    # ------------------------------------------------------------------ frequency cap
    def max_khz(self) -> dict[str, int]:
        """``scaling_max_freq`` of each policy, keyed by the file's path."""
        return {
            str(p / "scaling_max_freq"): _read_int(p / "scaling_max_freq") for p in self.policies
        }

    def check_max_khz(self, khz: int) -> None:
        """Refuse a cap the hardware or the current minimum does not allow, before writing."""
        for p in self.policies:
            lowest, highest = (
                _optional_int(p / "cpuinfo_min_freq"),
                _optional_int(p / "cpuinfo_max_freq"),
            )
            floor = _optional_int(p / "scaling_min_freq")
            if highest is not None and khz > highest:
                raise KnobError(
                    f"{khz / 1000:g} MHz is above what {p.name} allows "
                    f"(cpuinfo_max_freq {highest / 1000:g} MHz)"
                )
            if lowest is not None and khz < lowest:
                raise KnobError(
                    f"{khz / 1000:g} MHz is below what {p.name} allows "
                    f"(cpuinfo_min_freq {lowest / 1000:g} MHz)"
                )
            if floor is not None and khz < floor:
                raise KnobError(
                    f"{khz / 1000:g} MHz is below {p.name}'s scaling_min_freq "
                    f"({floor / 1000:g} MHz); lower it first or choose a higher cap"
                )

    def set_max_khz(self, khz: int) -> None:
        self.check_max_khz(khz)
        for p in self.policies:
            _write(p / "scaling_max_freq", str(int(khz)), "scaling_max_freq")

    # ------------------------------------------------------------------ governor
    def governors(self) -> dict[str, str]:
        """``scaling_governor`` of each policy, keyed by the file's path."""
        out = {}
        for p in self.policies:
            try:
                out[str(p / "scaling_governor")] = read_text(p / "scaling_governor")
            except SensorError as e:
                raise KnobError(str(e)) from None
        return out

    def set_governor(self, name: str) -> None:
        for p in self.policies:
            try:
                available = read_text(p / "scaling_available_governors").split()
            except SensorError:
                available = []
            if available and name not in available:
                raise KnobError(
                    f"{p.name} has no governor {name!r} (available: {', '.join(available)})"
                )
        for p in self.policies:
            _write(p / "scaling_governor", name, "scaling_governor")


def restore_files(values: dict[str, int | str], attribute: str) -> None:
    """Write back what was read from each policy file (a run's saved originals)."""
    for path, value in values.items():
        _write(Path(path), str(value), attribute)


def _optional_int(path: Path) -> int | None:
    try:
        return read_int(path)
    except SensorError:
        return None
