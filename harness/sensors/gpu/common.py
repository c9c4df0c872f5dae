"""What every GPU offers, whoever made it: the abstract device, its session, its errors.

One small class per vendor sits behind these (``nvidia.py`` through NVML, ``amd.py`` through
amdsmi); its methods map one to one onto the vendor library's calls, and its vendor's errors
become the ``GpuError`` family below in one place, each naming the call and the GPU. The rest of
the harness never imports a vendor library: the energy sources (``harness.sensors.nvml``,
``harness.sensors.amdsmi``), ``harness sensors --check``, the thermal state and the power-limit
knob all go through a ``Gpus`` session. Where there is no GPU, ``NoGpus`` stands in, so callers
need no ``if gpus is None``.

Units are the harness's own (joules from the counter's unit, watts, MHz, °C); conversions from
mJ, mW, µJ or µW happen in the vendor class, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from harness.errors import SensorError, SensorPermissionError


# ---------------------------------------------------------------------- errors
class GpuError(SensorError):
    """A vendor call failed; ``call`` names it, ``problem`` says what went wrong."""

    def __init__(self, call: str, problem: str, where: str = ""):
        self.call, self.problem, self.where = call, problem, where
        super().__init__(f"{call}{' on ' + where if where else ''}: {problem}")


class GpuNotSupported(GpuError):
    """This GPU or driver does not offer the call."""


class GpuPermissionError(GpuError, SensorPermissionError):
    """The call needs rights this user lacks."""


class GpuLost(GpuError):
    """The GPU fell off the bus: nothing on it can be read until it is reset."""


class GpuNoDriver(GpuError):
    """No vendor library or driver: this vendor has no GPU here."""


def describe(e: BaseException) -> str:
    """A vendor exception as text; some ask the library in ``__str__``, which may be what failed."""
    try:
        text = str(e)
    except Exception:
        text = ""
    return text or f"{type(e).__name__} {getattr(e, 'value', '')}".strip()


def text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------- one GPU
class Gpu(ABC):
    """One physical GPU as its vendor numbers it.

    The energy counter is raw: ``energy_count()`` in units of ``energy_unit_j`` joules, wrapping
    at ``energy_wrap`` units (None: the vendor states no range, so a step back is a reset).
    """

    #: the vendor library's name, for reasons and messages ("NVML", "amdsmi")
    library: str = "?"

    def __init__(self, index: int, handle: Any, uuid: str = "", name: str = ""):
        self.index, self.handle, self.uuid, self.name = index, handle, uuid, name
        self.energy_unit_j = 1e-3
        self.energy_wrap: int | None = None

    def label(self) -> str:
        """``GPU 0 (A100 GPU-...)``: how knob messages name it."""
        return f"GPU {self.index} ({self.name} {self.uuid})"

    def physical_label(self) -> str:
        """``physical GPU 0 A100 GPU-...``: how sensor reasons name it."""
        return f"physical GPU {self.index} {self.name} {self.uuid}".rstrip()

    # reading
    @abstractmethod
    def energy_count(self) -> int:
        """The raw cumulative energy counter (see the class docstring)."""

    @abstractmethod
    def instant_power_w(self) -> float:
        """Power now (or over the driver's shortest window)."""

    @abstractmethod
    def average_power_w(self) -> float:
        """Power averaged by the driver (about a second on many boards)."""

    @abstractmethod
    def temperature_c(self) -> float: ...

    @abstractmethod
    def sm_clock_mhz(self) -> float:
        """The graphics (SM) clock."""

    @abstractmethod
    def enforced_power_limit_w(self) -> float:
        """The limit the board holds itself to now (the lowest of every limit in force)."""

    def mig_enabled(self) -> bool:
        """Whether the GPU is split into instances whose energy it cannot tell apart."""
        return False

    @abstractmethod
    def processes(self) -> list[int]:
        """Process ids with a context on this GPU."""

    # changing
    @abstractmethod
    def power_limit_w(self) -> float:
        """The power management limit set (what ``nvidia-smi -pl`` / ``amd-smi set`` change)."""

    @abstractmethod
    def power_limit_range_w(self) -> tuple[float, float]:
        """(lowest, highest) limit the board accepts."""

    @abstractmethod
    def set_power_limit_w(self, watts: float) -> None: ...

    @abstractmethod
    def lock_clocks_mhz(self, low_mhz: int, high_mhz: int) -> None: ...

    @abstractmethod
    def reset_clocks(self) -> None: ...

    # how the energy source describes each way of reading it
    def counter_reason(self) -> str:
        return f"{self.library} energy counter of {self.physical_label()}"

    def instant_reason(self) -> str:
        return f"no energy counter on {self.physical_label()}: {self.library} power, sampled"

    def average_reason(self) -> str:
        return self.instant_reason() + " (an average)"


# ---------------------------------------------------------------------- a session
class Gpus(ABC):
    """An open session of one vendor library: its GPUs, and ``close`` to shut it down.

    Opening raises ``GpuNoDriver`` where the library or driver is missing and ``GpuError`` for
    anything else; ``all()`` lists every physical GPU (one that cannot be named is a
    ``BrokenGpu`` carrying its error, so the others still work).
    """

    #: the source and vendor name ("nvml", "amdsmi")
    vendor: str = "?"
    library: str = "?"
    #: the environment variables that pick the visible GPUs, first one set wins
    visible_env: tuple[str, ...] = ("CUDA_VISIBLE_DEVICES",)

    def __enter__(self) -> Gpus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def all(self) -> list[Gpu | BrokenGpu]: ...

    def mig_parent_uuid(self, mig_id: str) -> str | None:
        """The UUID of the GPU a MIG instance id belongs to (None: not a MIG id here)."""
        return None

    def driver_version(self) -> str | None:
        return None

    def by_uuid(self, uuid: str) -> Gpu | None:
        for gpu in self.all():
            if isinstance(gpu, Gpu) and gpu.uuid == uuid:
                return gpu
        return None

    @abstractmethod
    def close(self) -> None:
        """Shut the library down; idempotent."""


class BrokenGpu:
    """A GPU the vendor counts but that failed to answer who it is."""

    def __init__(self, index: int, error: GpuError):
        self.index, self.error = index, error
        self.uuid = self.name = ""

    def physical_label(self) -> str:
        return f"physical GPU {self.index}"


class NoGpus(Gpus):
    """The null session: no vendor library or driver here, and ``reason`` says why."""

    vendor = library = "none"

    def __init__(self, reason: str = "no GPU"):
        self.reason = reason

    def all(self) -> list[Gpu | BrokenGpu]:
        return []

    def close(self) -> None:
        pass
