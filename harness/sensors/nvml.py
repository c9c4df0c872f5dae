"""NVIDIA GPUs through NVML (the ``pynvml`` module of the nvidia-ml-py package).

One ``gpu:N`` domain per GPU this process can see, numbered in the order CUDA gives them to the
process: with ``CUDA_VISIBLE_DEVICES=1,0`` domain ``gpu:0`` is physical GPU 1. The physical NVML
index, UUID and name go into each domain's reason and into ``devices``.

* Volta and newer: ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since the driver loaded), a counter
  read at window edges. It advances in steps of about 100 ms on many boards.
* Older GPUs: no energy counter, so power is sampled by the meter and integrated:
  ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it, else ``nvmlDeviceGetPowerUsage``, which is
  a one-second average on many boards (so short windows are smeared).
* A MIG instance has no energy of its own in NVML and the whole GPU's counter includes the other
  tenants: such domains are ``unavailable``.

``pynvml`` is imported inside the source, at probe time, so a machine without it (or tests with a
fake module in ``sys.modules``) never pays for it at import.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

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
from harness.sensors.cuda_visible import visible as visible_gpus

NO_DRIVER = "no NVIDIA driver (libnvidia-ml not found)"
MIG_REASON = (
    "MIG is enabled: NVML cannot measure the energy of a MIG instance, and the whole GPU's "
    "counter includes the other tenants"
)
COUNTER_PERIOD_S = 0.1  # NVML total energy advances in ~100 ms steps on many boards
INSTANT_PERIOD_S = 0.02  # instant power refreshes at ~50 Hz
AVERAGE_PERIOD_S = 1.0  # nvmlDeviceGetPowerUsage is a 1-s average on many boards
GPU_MAX_POWER_W = 5000.0  # no GPU draws more: what a counter's count after a reset must fit

# NVML return codes (nvml.h); used when the pynvml in hand does not define a name.
_ERR_NOT_SUPPORTED = 3
_ERR_NO_PERMISSION = 4
_ERR_DRIVER_NOT_LOADED = 9
_ERR_LIBRARY_NOT_FOUND = 12
_ERR_GPU_IS_LOST = 15
_FI_DEV_POWER_INSTANT = 186


@dataclass
class _Physical:
    """A GPU as NVML numbers it."""

    index: int
    handle: Any = None
    uuid: str = ""
    name: str = ""
    error: Exception | None = None

    def label(self) -> str:
        return f"physical GPU {self.index} {self.name} {self.uuid}".rstrip()


@dataclass
class _Gpu:
    """One visible GPU domain and how it is read."""

    domain: str
    physical: _Physical | None
    kind: str
    status: str
    reason: str
    read: str = ""  # "energy", "instant" or "average"
    unwrapper: CounterUnwrapper | None = None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSource(Source):
    """Energy of each visible NVIDIA GPU (counter on Volta+, sampled power before)."""

    name = "nvml"
    method = MEASURED
    update_period_s = COUNTER_PERIOD_S

    def __init__(self) -> None:
        self._nvml: Any = None  # the pynvml module, once initialised
        self._gpus: list[_Gpu] | None = None
        self._rows: list[DomainStatus] = []
        #: visible domain -> {"nvml_index", "uuid", "name", "read"} for the usable GPUs
        self.devices: dict[str, dict] = {}

    # ------------------------------------------------------------------ discovery
    def probe(self) -> list[DomainStatus]:
        if self._gpus is None:
            try:
                self._rows = self._discover()
            except Exception as e:  # never raise out of probe: a broken driver is a status
                self._gpus = []
                self._rows = [self._row("gpu", UNAVAILABLE, f"NVML failed: {_describe(e)}")]
        return list(self._rows)

    def _row(self, domain: str, status: str, reason: str, kind: str = COUNTER) -> DomainStatus:
        return DomainStatus(self.name, domain, kind, status, reason)

    def _discover(self) -> list[DomainStatus]:
        self._gpus = []
        try:
            import pynvml
        except Exception as e:
            return [
                self._row(
                    "gpu", UNAVAILABLE, f"pynvml not importable (pip install nvidia-ml-py): {e}"
                )
            ]
        try:
            pynvml.nvmlInit()
        except Exception as e:
            status, reason = self._classify(e, pynvml)
            return [self._row("gpu", status, reason)]
        self._nvml = pynvml
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as e:
            status, reason = self._classify(e)
            return [self._row("gpu", status, f"cannot count GPUs: {reason}")]
        if count == 0:
            return [self._row("gpu", UNAVAILABLE, "NVML found no NVIDIA GPU")]
        physical = [self._physical(i) for i in range(count)]
        visible, problem = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), physical, pynvml)
        if not visible:
            return [self._row("gpu", UNAVAILABLE, problem or "no GPU is visible")]
        note = f"; {problem}" if problem else ""
        for n, (entry, phys) in enumerate(visible):
            gpu = self._domain(f"gpu:{n}", entry, phys)
            gpu.reason += note
            self._gpus.append(gpu)
        usable = [g for g in self._gpus if g.status == OK]
        periods = {"energy": COUNTER_PERIOD_S, "instant": INSTANT_PERIOD_S}
        if usable:
            self.update_period_s = max(periods.get(g.read, AVERAGE_PERIOD_S) for g in usable)
        for g in usable:
            assert g.physical is not None
            self.devices[g.domain] = {
                "nvml_index": g.physical.index,
                "uuid": g.physical.uuid,
                "name": g.physical.name,
                "read": g.read,
            }
        return [self._row(g.domain, g.status, g.reason, g.kind) for g in self._gpus]

    def _physical(self, index: int) -> _Physical:
        nv = self._nvml
        p = _Physical(index)
        try:
            p.handle = nv.nvmlDeviceGetHandleByIndex(index)
            p.uuid = _text(nv.nvmlDeviceGetUUID(p.handle))
            p.name = _text(nv.nvmlDeviceGetName(p.handle))
        except Exception as e:
            p.error = e
        return p

    def _domain(self, domain: str, entry: str, phys: _Physical) -> _Gpu:
        """How ``domain`` (CUDA's view of ``phys``) can be read, or why it cannot."""
        nv = self._nvml
        if phys.error is not None:
            status, reason = self._classify(phys.error)
            return _Gpu(domain, phys, COUNTER, status, f"{phys.label()}: {reason}")
        if entry.startswith("MIG-"):
            return _Gpu(
                domain, phys, COUNTER, UNAVAILABLE, f"{entry} on {phys.label()}: {MIG_REASON}"
            )
        if _mig_enabled(nv, phys.handle):
            return _Gpu(domain, phys, COUNTER, UNAVAILABLE, f"{phys.label()}: {MIG_REASON}")
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(phys.handle)
        except Exception as e:
            if _code(e, nv, "NVML_ERROR_NOT_SUPPORTED", _ERR_NOT_SUPPORTED) is None:
                status, reason = self._classify(e)
                return _Gpu(domain, phys, COUNTER, status, f"{phys.label()}: {reason}")
            return self._power_domain(domain, phys)
        gpu = _Gpu(
            domain,
            phys,
            COUNTER,
            OK,
            f"NVML total energy counter (mJ) of {phys.label()}; "
            f"advances in ~{COUNTER_PERIOD_S * 1000:.0f} ms steps on many GPUs",
            read="energy",
        )
        return gpu

    def _power_domain(self, domain: str, phys: _Physical) -> _Gpu:
        """A GPU without an energy counter (before Volta): sampled power, if it has any."""
        nv = self._nvml
        try:
            self._instant_w(phys.handle)
            return _Gpu(
                domain,
                phys,
                POWER,
                OK,
                f"no energy counter on {phys.label()}: NVML instant power "
                "(NVML_FI_DEV_POWER_INSTANT), sampled and integrated",
                read="instant",
            )
        except Exception:
            pass
        try:
            nv.nvmlDeviceGetPowerUsage(phys.handle)
        except Exception as e:
            status, reason = self._classify(e)
            if status == UNAVAILABLE:
                reason = f"reports neither energy nor power ({reason})"
            return _Gpu(domain, phys, POWER, status, f"{phys.label()}: {reason}")
        return _Gpu(
            domain,
            phys,
            POWER,
            OK,
            f"no energy counter on {phys.label()}: NVML power usage (nvmlDeviceGetPowerUsage, "
            "a 1-s average on many boards, so short windows are smeared), sampled and integrated",
            read="average",
        )

    def _classify(self, e: Exception, nv: Any = None) -> tuple[str, str]:
        """Status and reason for an NVML error."""
        nv = nv or self._nvml
        if _code(e, nv, "NVML_ERROR_LIBRARY_NOT_FOUND", _ERR_LIBRARY_NOT_FOUND) is not None:
            return UNAVAILABLE, NO_DRIVER
        if _code(e, nv, "NVML_ERROR_DRIVER_NOT_LOADED", _ERR_DRIVER_NOT_LOADED) is not None:
            return UNAVAILABLE, "NVIDIA driver not loaded (is the nvidia kernel module loaded?)"
        if _code(e, nv, "NVML_ERROR_NO_PERMISSION", _ERR_NO_PERMISSION) is not None:
            return NO_PERMISSION, (
                "NVML: insufficient permissions; this user needs read access to /dev/nvidia* "
                "(ask an administrator)"
            )
        if _code(e, nv, "NVML_ERROR_NOT_SUPPORTED", _ERR_NOT_SUPPORTED) is not None:
            return UNAVAILABLE, "not supported by this GPU or driver"
        if _code(e, nv, "NVML_ERROR_GPU_IS_LOST", _ERR_GPU_IS_LOST) is not None:
            return UNAVAILABLE, "GPU is lost (fell off the bus); reset it or reboot"
        return UNAVAILABLE, f"NVML error: {_describe(e)}"

    # ------------------------------------------------------------------ reading
    def _instant_w(self, handle: Any) -> float:
        nv = self._nvml
        field = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", _FI_DEV_POWER_INSTANT)
        value = nv.nvmlDeviceGetFieldValues(handle, [field])[0]
        if value.nvmlReturn != getattr(nv, "NVML_SUCCESS", 0):
            raise nv.NVMLError(value.nvmlReturn)
        return value.value.uiVal / 1000.0  # mW

    def open(self) -> None:
        """Start counting from now; after ``close`` NVML is initialised and probed again."""
        if self._nvml is None:
            self._gpus, self.devices = None, {}
            self.probe()
        now = time.perf_counter()
        for g in self._gpus or []:
            if g.status != OK or g.read != "energy":
                continue
            assert g.physical is not None
            try:
                first_mj = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.physical.handle))
            except Exception as e:
                g.status, g.reason = self._classify(e)
                continue
            # no stated range: a step back is a reset; the bound is in mJ per second
            g.unwrapper = CounterUnwrapper(
                None,
                first_mj,
                domain=g.domain,
                max_power=GPU_MAX_POWER_W * 1000,
                now_s=now,
                events=self.events,
            )

    def counter_domains(self) -> list[str]:
        return [g.domain for g in self._gpus or [] if g.status == OK and g.read == "energy"]

    def power_domains(self) -> list[str]:
        return [g.domain for g in self._gpus or [] if g.status == OK and g.read != "energy"]

    def domain_update_period_s(self, domain: str) -> float:
        periods = {"energy": COUNTER_PERIOD_S, "instant": INSTANT_PERIOD_S}
        for g in self._gpus or []:
            if g.domain == domain:
                return periods.get(g.read, AVERAGE_PERIOD_S)
        return self.update_period_s

    def _failed(self, g: _Gpu, what: str, e: Exception) -> None:
        assert g.physical is not None
        lost = _code(e, self._nvml, "NVML_ERROR_GPU_IS_LOST", _ERR_GPU_IS_LOST) is not None
        self.fail(g.domain, f"{g.physical.label()}: NVML {what} read failed: {_describe(e)}", lost)

    def read_energy_j(self) -> dict[str, float]:
        out: dict[str, float] = {}
        now = time.perf_counter()
        for g in self._gpus or []:
            if g.status != OK or g.read != "energy" or g.unwrapper is None:
                continue
            assert g.physical is not None
            try:
                raw_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.physical.handle)
            except Exception as e:
                self._failed(g, "energy", e)
                continue
            out[g.domain] = g.unwrapper.update(int(raw_mj), now) / 1000.0
        return out

    def read_power_w(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self._gpus or []:
            if g.status != OK or g.read == "energy":
                continue
            assert g.physical is not None
            try:
                out[g.domain] = self._power_w(g)
            except Exception as e:
                self._failed(g, "power", e)
        return out

    def _power_w(self, g: _Gpu) -> float:
        assert g.physical is not None
        if g.read == "instant":
            return self._instant_w(g.physical.handle)
        return self._nvml.nvmlDeviceGetPowerUsage(g.physical.handle) / 1000.0

    def check_power_w(self) -> dict[str, float]:
        """Power of the counter domains, from NVML's power readings (``harness sensors
        --check`` integrates it against the counter): instant power where the driver has it."""
        out: dict[str, float] = {}
        for g in self._gpus or []:
            if g.status != OK or g.read != "energy":
                continue
            assert g.physical is not None
            try:
                out[g.domain] = self._instant_w(g.physical.handle)
            except Exception:
                try:
                    out[g.domain] = self._nvml.nvmlDeviceGetPowerUsage(g.physical.handle) / 1e3
                except Exception:
                    continue
        return out

    def thermal(self) -> dict[str, dict[str, float]]:
        """Temperature (°C), SM clock (MHz) and enforced power limit (W) of each usable GPU."""
        nv = self._nvml
        out: dict[str, dict[str, float]] = {}
        if nv is None:
            return out
        for g in self._gpus or []:
            if g.status != OK or g.physical is None:
                continue
            h, state = g.physical.handle, {}
            for key, read in (
                ("temp_c", lambda h=h: nv.nvmlDeviceGetTemperature(h, _gpu_sensor(nv))),
                ("clock_mhz", lambda h=h: nv.nvmlDeviceGetClockInfo(h, _sm_clock(nv))),
                ("power_limit_w", lambda h=h: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
            ):
                try:
                    state[key] = float(read())
                except Exception:  # not every GPU reports every one
                    continue
            if state:
                out[g.domain] = state
        return out

    def drop(self, domain: str) -> None:
        for g in self._gpus or []:
            if g.domain == domain and g.status == OK:
                g.status, g.reason = UNAVAILABLE, "dropped after failed reads"

    def close(self) -> None:
        nv, self._nvml = self._nvml, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass  # nothing useful to do about a failing shutdown
        for g in self._gpus or []:
            g.unwrapper = None  # handles are dead now; open() starts over


def driver_version() -> str | None:
    """The NVIDIA driver's version, or None without a driver (for a run's manifest)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return _text(version)
    except Exception:  # no driver, no library: the driver is simply unknown
        return None


def _gpu_sensor(nv: Any) -> int:
    return getattr(nv, "NVML_TEMPERATURE_GPU", 0)


def _sm_clock(nv: Any) -> int:
    return getattr(nv, "NVML_CLOCK_SM", 1)


# ---------------------------------------------------------------------- helpers
def _code(e: Exception, nv: Any, name: str, default: int) -> int | None:
    """The NVML return code ``name`` if ``e`` carries it, else None."""
    wanted = getattr(nv, name, default) if nv is not None else default
    value = getattr(e, "value", None)
    return wanted if value == wanted else None


def _describe(e: Exception) -> str:
    try:
        text = str(e)
    except Exception:  # pynvml's __str__ asks the library, which may be the thing that failed
        text = ""
    return text or f"{type(e).__name__} {getattr(e, 'value', '')}".strip()


def _mig_enabled(nv: Any, handle: Any) -> bool:
    if not hasattr(nv, "nvmlDeviceGetMigMode"):
        return False
    try:
        current, _pending = nv.nvmlDeviceGetMigMode(handle)
    except Exception:  # NotSupported before Ampere: no MIG
        return False
    return current == getattr(nv, "NVML_DEVICE_MIG_ENABLE", 1)
