"""The energy source over a GPU vendor's session: one ``gpu:N`` domain per GPU this process sees.

Domains are numbered in the order CUDA (HIP on AMD) gives the GPUs to the process: with
``CUDA_VISIBLE_DEVICES=1,0`` domain ``gpu:0`` is physical GPU 1. The physical index, UUID and
name go into each domain's reason and into ``devices``.

* A GPU with an energy counter (NVIDIA Volta and newer, AMD through ``amdsmi_get_energy_count``)
  is read at window edges; the counter is unwrapped in its own units (NVML: mJ, no stated range;
  amdsmi: ``counter_resolution`` µJ counts, 64-bit) and a step back that fits no wrap is a reset.
* A GPU without one: power is sampled by the meter and integrated, the instant reading where the
  driver has it, else the driver's average (smeared over about a second).
* A MIG instance has no energy of its own and the whole GPU's counter includes the other
  tenants: such domains are ``unavailable``.

The vendor library is opened at probe time through ``harness.sensors.gpu`` (never at import).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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
from harness.sensors.gpu import (
    BrokenGpu,
    Gpu,
    GpuError,
    GpuLost,
    GpuNotSupported,
    Gpus,
    open_gpus,
    visible,
)
from harness.sensors.gpu.common import GpuPermissionError, describe

MIG_REASON = (
    "MIG is enabled: NVML cannot measure the energy of a MIG instance, and the whole GPU's "
    "counter includes the other tenants"
)
COUNTER_PERIOD_S = 0.1  # GPU energy counters advance in ~100 ms steps on many boards
INSTANT_PERIOD_S = 0.02  # instant power refreshes at ~50 Hz
AVERAGE_PERIOD_S = 1.0  # the drivers' average power is a 1-s average on many boards
GPU_MAX_POWER_W = 5000.0  # no GPU draws more: what a counter's count after a reset must fit
PERIODS_S = {"energy": COUNTER_PERIOD_S, "instant": INSTANT_PERIOD_S, "average": AVERAGE_PERIOD_S}


def status_of(e: GpuError) -> str:
    return NO_PERMISSION if isinstance(e, GpuPermissionError) else UNAVAILABLE


@dataclass
class _Domain:
    """One visible GPU domain and how it is read."""

    domain: str
    gpu: Gpu | BrokenGpu
    kind: str
    status: str
    reason: str
    read: str = ""  # "energy", "instant" or "average"
    unwrapper: CounterUnwrapper | None = None
    unit_j: float = 0.0


class GpuSource(Source):
    """Energy of each visible GPU of one vendor (a counter where it has one, else power)."""

    name = "?"  # the vendor, as harness.sensors.gpu.VENDORS names it
    method = MEASURED
    update_period_s = COUNTER_PERIOD_S
    #: the ``devices`` key of the vendor's own GPU index
    index_key = "index"
    #: the reason of the one row when the library works but lists no GPU
    none_found = "found no GPU"

    def __init__(self) -> None:
        self._session: Gpus | None = None
        self._domains: list[_Domain] | None = None
        self._rows: list[DomainStatus] = []
        #: visible domain -> {index_key, "uuid", "name", "read"} for the usable GPUs
        self.devices: dict[str, dict] = {}

    # ------------------------------------------------------------------ discovery
    def probe(self) -> list[DomainStatus]:
        if self._domains is None:
            try:
                self._rows = self._discover()
            except Exception as e:  # never raise out of probe: a broken driver is a status
                self._domains = []
                self._rows = [self._row("gpu", UNAVAILABLE, f"{self.name} failed: {describe(e)}")]
        return list(self._rows)

    def _row(self, domain: str, status: str, reason: str, kind: str = COUNTER) -> DomainStatus:
        return DomainStatus(self.name, domain, kind, status, reason)

    def _discover(self) -> list[DomainStatus]:
        self._domains = []
        try:
            self._session = open_gpus(self.name)
        except GpuError as e:
            return [self._row("gpu", status_of(e), e.problem)]
        try:
            physical = self._session.all()
        except GpuError as e:
            return [self._row("gpu", status_of(e), f"cannot count GPUs: {e.problem}")]
        if not physical:
            return [self._row("gpu", UNAVAILABLE, self.none_found)]
        shown, problem = visible(self._session)
        if not shown:
            return [self._row("gpu", UNAVAILABLE, problem or "no GPU is visible")]
        note = f"; {problem}" if problem else ""
        for n, (entry, gpu) in enumerate(shown):
            d = self._domain(f"gpu:{n}", entry, gpu)
            d.reason += note
            self._domains.append(d)
        usable = [d for d in self._domains if d.status == OK]
        if usable:
            self.update_period_s = max(PERIODS_S[d.read] for d in usable)
        for d in usable:
            self.devices[d.domain] = {
                self.index_key: d.gpu.index,
                "uuid": d.gpu.uuid,
                "name": d.gpu.name,
                "read": d.read,
            }
        return [self._row(d.domain, d.status, d.reason, d.kind) for d in self._domains]

    def _domain(self, domain: str, entry: str, gpu: Gpu | BrokenGpu) -> _Domain:
        """How ``domain`` (this process's view of ``gpu``) can be read, or why it cannot."""
        label = gpu.physical_label()
        if isinstance(gpu, BrokenGpu):
            e = gpu.error
            return _Domain(domain, gpu, COUNTER, status_of(e), f"{label}: {e.problem}")
        if entry.startswith("MIG-"):
            return _Domain(domain, gpu, COUNTER, UNAVAILABLE, f"{entry} on {label}: {MIG_REASON}")
        if gpu.mig_enabled():
            return _Domain(domain, gpu, COUNTER, UNAVAILABLE, f"{label}: {MIG_REASON}")
        try:
            gpu.energy_count()
        except GpuNotSupported:
            return self._power_domain(domain, gpu)
        except GpuError as e:
            return _Domain(domain, gpu, COUNTER, status_of(e), f"{label}: {e.problem}")
        return _Domain(domain, gpu, COUNTER, OK, gpu.counter_reason(), read="energy")

    def _power_domain(self, domain: str, gpu: Gpu) -> _Domain:
        """A GPU without an energy counter: sampled power, if it has any."""
        try:
            gpu.instant_power_w()
            return _Domain(domain, gpu, POWER, OK, gpu.instant_reason(), read="instant")
        except GpuError:
            pass
        try:
            gpu.average_power_w()
        except GpuError as e:
            status, reason = status_of(e), e.problem
            if status == UNAVAILABLE:
                reason = f"reports neither energy nor power ({reason})"
            return _Domain(domain, gpu, POWER, status, f"{gpu.physical_label()}: {reason}")
        return _Domain(domain, gpu, POWER, OK, gpu.average_reason(), read="average")

    def _ok(self, read: str | None = None) -> list[_Domain]:
        """The usable domains (read one way, if ``read`` is given)."""
        return [
            d
            for d in self._domains or []
            if d.status == OK and isinstance(d.gpu, Gpu) and (read is None or d.read == read)
        ]

    # ------------------------------------------------------------------ reading
    def open(self) -> None:
        """Start counting from now; after ``close`` the library is opened and probed again."""
        if self._session is None:
            self._domains, self.devices = None, {}
            self.probe()
        now = time.perf_counter()
        for d in self._ok("energy"):
            try:
                first = d.gpu.energy_count()
            except GpuError as e:
                d.status, d.reason = status_of(e), f"{d.gpu.physical_label()}: {e.problem}"
                continue
            d.unit_j = d.gpu.energy_unit_j
            # the bound a count after a step back must fit, in counter units per second
            d.unwrapper = CounterUnwrapper(
                d.gpu.energy_wrap,
                first,
                domain=d.domain,
                max_power=GPU_MAX_POWER_W / d.unit_j,
                now_s=now,
                events=self.events,
            )

    def counter_domains(self) -> list[str]:
        return [d.domain for d in self._ok("energy")]

    def power_domains(self) -> list[str]:
        return [d.domain for d in self._ok() if d.read != "energy"]

    def domain_update_period_s(self, domain: str) -> float:
        for d in self._domains or []:
            if d.domain == domain:
                return PERIODS_S.get(d.read, AVERAGE_PERIOD_S)
        return self.update_period_s

    def _failed(self, d: _Domain, what: str, e: GpuError) -> None:
        label = d.gpu.physical_label()
        message = f"{label}: {self._session_library()} {what} read failed: {e.problem}"
        self.fail(d.domain, message, isinstance(e, GpuLost))

    def _session_library(self) -> str:
        return getattr(self._session, "library", self.name)

    def read_energy_j(self) -> dict[str, float]:
        out: dict[str, float] = {}
        now = time.perf_counter()
        for d in self._ok("energy"):
            if d.unwrapper is None:
                continue
            try:
                raw = d.gpu.energy_count()
            except GpuError as e:
                self._failed(d, "energy", e)
                continue
            out[d.domain] = d.unwrapper.update(raw, now) * d.unit_j
        return out

    def read_power_w(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for d in self._ok():
            if d.read == "energy":
                continue
            gpu = d.gpu
            try:
                out[d.domain] = (
                    gpu.instant_power_w() if d.read == "instant" else gpu.average_power_w()
                )
            except GpuError as e:
                self._failed(d, "power", e)
        return out

    def check_power_w(self) -> dict[str, float]:
        """Power of the counter domains, from the vendor's power readings (``harness sensors
        --check`` integrates it against the counter): instant power where the driver has it."""
        out: dict[str, float] = {}
        for d in self._ok("energy"):
            for read in (d.gpu.instant_power_w, d.gpu.average_power_w):
                try:
                    out[d.domain] = read()
                    break
                except GpuError:
                    continue
        return out

    def thermal(self) -> dict[str, dict[str, float]]:
        """Temperature (°C), SM clock (MHz) and enforced power limit (W) of each usable GPU."""
        from harness.sensors.thermal import gpu_state

        out: dict[str, dict[str, float]] = {}
        if self._session is None:
            return out
        for d in self._ok():
            state = gpu_state(d.gpu)
            if state:
                out[d.domain] = state
        return out

    def drop(self, domain: str) -> None:
        for d in self._domains or []:
            if d.domain == domain and d.status == OK:
                d.status, d.reason = UNAVAILABLE, "dropped after failed reads"

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
        for d in self._domains or []:
            d.unwrapper = None  # handles are dead now; open() starts over
