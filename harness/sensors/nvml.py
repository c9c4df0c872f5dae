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
from dataclasses import dataclass
from typing import Any

from harness.errors import SensorError
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

NO_DRIVER = "no NVIDIA driver (libnvidia-ml not found)"
MIG_REASON = (
    "MIG is enabled: NVML cannot measure the energy of a MIG instance, and the whole GPU's "
    "counter includes the other tenants"
)
COUNTER_PERIOD_S = 0.1  # NVML total energy advances in ~100 ms steps on many boards
INSTANT_PERIOD_S = 0.02  # instant power refreshes at ~50 Hz
AVERAGE_PERIOD_S = 1.0  # nvmlDeviceGetPowerUsage is a 1-s average on many boards

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
        visible, problem = _visible(os.environ.get("CUDA_VISIBLE_DEVICES"), physical, pynvml)
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
            first_mj = nv.nvmlDeviceGetTotalEnergyConsumption(phys.handle)
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
        gpu.unwrapper = CounterUnwrapper(None, int(first_mj))
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

    def counter_domains(self) -> list[str]:
        return [g.domain for g in self._gpus or [] if g.status == OK and g.read == "energy"]

    def power_domains(self) -> list[str]:
        return [g.domain for g in self._gpus or [] if g.status == OK and g.read != "energy"]

    def read_energy_j(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self._gpus or []:
            if g.status != OK or g.read != "energy":
                continue
            assert g.physical is not None and g.unwrapper is not None
            try:
                raw_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(g.physical.handle)
            except Exception as e:
                raise SensorError(
                    f"{g.domain} ({g.physical.label()}): NVML energy read failed: {_describe(e)}"
                ) from e
            out[g.domain] = g.unwrapper.update(int(raw_mj)) / 1000.0
        return out

    def read_power_w(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for g in self._gpus or []:
            if g.status != OK or g.read == "energy":
                continue
            assert g.physical is not None
            try:
                if g.read == "instant":
                    out[g.domain] = self._instant_w(g.physical.handle)
                else:
                    out[g.domain] = self._nvml.nvmlDeviceGetPowerUsage(g.physical.handle) / 1000.0
            except Exception as e:
                raise SensorError(
                    f"{g.domain} ({g.physical.label()}): NVML power read failed: {_describe(e)}"
                ) from e
        return out

    def close(self) -> None:
        nv, self._nvml = self._nvml, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass  # nothing useful to do about a failing shutdown
        if self._gpus:
            self._gpus = [g for g in self._gpus if g.status != OK]  # handles are dead now


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


def _visible(
    env: str | None, physical: list[_Physical], nv: Any
) -> tuple[list[tuple[str, _Physical]], str]:
    """The GPUs CUDA shows this process, in CUDA's order, and a note on any entry it ignored.

    Follows CUDA's rules for ``CUDA_VISIBLE_DEVICES``: a comma-separated list of indices,
    ``GPU-<uuid>`` (a unique prefix is enough) or MIG ids (``MIG-<uuid>``, legacy
    ``MIG-GPU-<uuid>/<gi>/<ci>``); the first entry that names no GPU (or one already named) hides
    itself and every entry after it. Indices are taken as NVML (PCI bus) order, which is CUDA's
    order with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; CUDA's default (fastest first) can differ on a
    machine with mixed GPU models, which the note then says.
    """
    if env is None:
        visible = [(str(p.index), p) for p in physical]
        return visible, _order_note(physical, visible)
    entries = [e.strip() for e in env.split(",")]
    if entries == [""]:
        return [], "CUDA_VISIBLE_DEVICES is empty: it hides every GPU"
    visible: list[tuple[str, _Physical]] = []
    seen: set[int] = set()
    for entry in entries:
        phys = _match(entry, physical, nv)
        if phys is None or phys.index in seen:
            why = "names a GPU twice" if phys is not None else "names no GPU"
            known = ", ".join(f"{p.index} ({p.uuid or '?'})" for p in physical)
            problem = (
                f"CUDA_VISIBLE_DEVICES={env!r}: entry {entry!r} {why} (NVML sees {known}); "
                "CUDA ignores it and every entry after it"
            )
            return visible, problem
        seen.add(phys.index)
        visible.append((entry, phys))
    return visible, _order_note(physical, visible)


def _match(entry: str, physical: list[_Physical], nv: Any) -> _Physical | None:
    if entry.isdigit():
        i = int(entry)
        return physical[i] if i < len(physical) else None
    key = entry
    if key.startswith("MIG-GPU-"):  # legacy MIG-GPU-<uuid>/<gi>/<ci>: the parent is in the id
        key = key[len("MIG-") :].split("/")[0]
    elif key.startswith("MIG-"):  # MIG-<uuid>: ask NVML for the parent GPU
        return _mig_parent(entry, physical, nv)
    if not key.startswith("GPU-"):
        return None
    found = [p for p in physical if p.uuid and p.uuid.startswith(key)]
    return found[0] if len(found) == 1 else None


def _mig_parent(entry: str, physical: list[_Physical], nv: Any) -> _Physical | None:
    try:
        mig = nv.nvmlDeviceGetHandleByUUID(entry)
        parent_uuid = _text(
            nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig))
        )
    except Exception:
        return None
    found = [p for p in physical if p.uuid == parent_uuid]
    return found[0] if found else None


def _order_note(physical: list[_Physical], visible: list[tuple[str, _Physical]]) -> str:
    names = {p.name for p in physical if p.name}
    if len(visible) > 1 and len(names) > 1 and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        return (
            "gpu:N assumes CUDA_DEVICE_ORDER=PCI_BUS_ID (mixed GPU models: CUDA's default order, "
            "fastest first, may differ)"
        )
    return ""
