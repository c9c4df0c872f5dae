"""NVIDIA GPUs through NVML (the ``pynvml`` module of the nvidia-ml-py package).

The one place in the harness that opens NVML: ``NvidiaGpus()`` calls ``nvmlInit`` and ``close``
calls ``nvmlShutdown``. Every call goes through ``NvidiaGpus.call``, which turns an NVML error
into the ``GpuError`` family (``harness.sensors.gpu.common``) naming the call and the GPU.

Units as NVML gives them: energy in mJ since the driver loaded, power and limits in mW.
"""

from __future__ import annotations

from typing import Any

from harness.sensors.gpu.common import (
    BrokenGpu,
    Gpu,
    GpuError,
    GpuLost,
    GpuNoDriver,
    GpuNotSupported,
    GpuPermissionError,
    Gpus,
    describe,
    text,
)

NO_DRIVER = "no NVIDIA driver (libnvidia-ml not found)"
PERMISSION = (
    "NVML: insufficient permissions; this user needs read access to /dev/nvidia* "
    "(ask an administrator)"
)

# NVML return codes (nvml.h); used when the pynvml in hand does not define a name.
_CODES = {
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_GPU_IS_LOST": 15,
}
_FI_DEV_POWER_INSTANT = 186


def _code(nv: Any, name: str) -> int:
    return getattr(nv, name, _CODES[name]) if nv is not None else _CODES[name]


def vendor_error(e: Exception, call: str, where: str = "", nv: Any = None) -> GpuError:
    """An NVML exception as the harness's own: the one mapping of NVML's errors."""
    value = getattr(e, "value", None)
    if value == _code(nv, "NVML_ERROR_LIBRARY_NOT_FOUND"):
        return GpuNoDriver(call, NO_DRIVER, where)
    if value == _code(nv, "NVML_ERROR_DRIVER_NOT_LOADED"):
        problem = "NVIDIA driver not loaded (is the nvidia kernel module loaded?)"
        return GpuNoDriver(call, problem, where)
    if value == _code(nv, "NVML_ERROR_NO_PERMISSION"):
        return GpuPermissionError(call, PERMISSION, where)
    if value == _code(nv, "NVML_ERROR_NOT_SUPPORTED"):
        return GpuNotSupported(call, "not supported by this GPU or driver", where)
    if value == _code(nv, "NVML_ERROR_GPU_IS_LOST"):
        return GpuLost(call, "GPU is lost (fell off the bus); reset it or reboot", where)
    return GpuError(call, f"NVML error: {describe(e)}", where)


class NvidiaGpus(Gpus):
    """An NVML session. Raises ``GpuNoDriver`` without pynvml or a driver."""

    vendor = "nvml"
    library = "NVML"
    visible_env = ("CUDA_VISIBLE_DEVICES",)

    def __init__(self) -> None:
        try:
            import pynvml
        except Exception as e:
            raise GpuNoDriver(
                "import pynvml", f"pynvml not importable (pip install nvidia-ml-py): {e}"
            ) from None
        try:
            pynvml.nvmlInit()
        except Exception as e:
            raise vendor_error(e, "nvmlInit", nv=pynvml) from None
        self.nv: Any = pynvml
        self._all: list[Gpu | BrokenGpu] | None = None

    def call(self, fn: str, gpu: Gpu | None, *args) -> Any:
        """``pynvml.fn(*args)``, its errors as a ``GpuError`` naming the call and the GPU."""
        try:
            return getattr(self.nv, fn)(*args)
        except AttributeError:
            raise GpuNotSupported(fn, "not in this pynvml (upgrade nvidia-ml-py)") from None
        except Exception as e:
            raise vendor_error(e, fn, gpu.label() if gpu else "", self.nv) from None

    def all(self) -> list[Gpu | BrokenGpu]:
        if self._all is None:
            self._all = [self._one(i) for i in range(self.call("nvmlDeviceGetCount", None))]
        return self._all

    def _one(self, index: int) -> NvidiaGpu | BrokenGpu:
        try:
            handle = self.call("nvmlDeviceGetHandleByIndex", None, index)
            gpu = NvidiaGpu(self, index, handle)
            gpu.uuid = text(self.call("nvmlDeviceGetUUID", None, handle))
            gpu.name = text(self.call("nvmlDeviceGetName", None, handle))
        except GpuError as e:
            return BrokenGpu(index, e)
        return gpu

    def mig_parent_uuid(self, mig_id: str) -> str | None:
        nv = self.nv
        try:
            mig = nv.nvmlDeviceGetHandleByUUID(mig_id)
            return text(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)))
        except Exception:
            return None

    def driver_version(self) -> str | None:
        try:
            return text(self.call("nvmlSystemGetDriverVersion", None))
        except GpuError:
            return None

    def close(self) -> None:
        nv, self.nv = self.nv, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass  # nothing useful to do about a failing shutdown


class NvidiaGpu(Gpu):
    """One NVIDIA GPU: energy in mJ, no stated wrap (a step back is a reset)."""

    library = "NVML"

    def __init__(self, session: NvidiaGpus, index: int, handle: Any):
        super().__init__(index, handle)
        self._s = session

    def _call(self, fn: str, *args) -> Any:
        return self._s.call(fn, self, self.handle, *args)

    def energy_count(self) -> int:
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption"))

    def instant_power_w(self) -> float:
        nv = self._s.nv
        field = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", _FI_DEV_POWER_INSTANT)
        value = self._call("nvmlDeviceGetFieldValues", [field])[0]
        if value.nvmlReturn != getattr(nv, "NVML_SUCCESS", 0):
            raise vendor_error(
                nv.NVMLError(value.nvmlReturn), "nvmlDeviceGetFieldValues", self.label(), nv
            )
        return value.value.uiVal / 1000.0

    def average_power_w(self) -> float:
        return self._call("nvmlDeviceGetPowerUsage") / 1000.0

    def temperature_c(self) -> float:
        return float(
            self._call("nvmlDeviceGetTemperature", getattr(self._s.nv, "NVML_TEMPERATURE_GPU", 0))
        )

    def sm_clock_mhz(self) -> float:
        return float(self._call("nvmlDeviceGetClockInfo", getattr(self._s.nv, "NVML_CLOCK_SM", 1)))

    def enforced_power_limit_w(self) -> float:
        return self._call("nvmlDeviceGetEnforcedPowerLimit") / 1000.0

    def mig_enabled(self) -> bool:
        try:
            current, _pending = self._call("nvmlDeviceGetMigMode")
        except GpuError:  # NotSupported before Ampere: no MIG
            return False
        return current == getattr(self._s.nv, "NVML_DEVICE_MIG_ENABLE", 1)

    def processes(self) -> list[int]:
        return [int(p.pid) for p in self._call("nvmlDeviceGetComputeRunningProcesses")]

    def power_limit_w(self) -> float:
        return self._call("nvmlDeviceGetPowerManagementLimit") / 1000.0

    def power_limit_range_w(self) -> tuple[float, float]:
        low, high = self._call("nvmlDeviceGetPowerManagementLimitConstraints")
        return low / 1000.0, high / 1000.0

    def set_power_limit_w(self, watts: float) -> None:
        self._call("nvmlDeviceSetPowerManagementLimit", int(round(watts * 1000)))

    def lock_clocks_mhz(self, low_mhz: int, high_mhz: int) -> None:
        self._call("nvmlDeviceSetGpuLockedClocks", int(low_mhz), int(high_mhz))

    def reset_clocks(self) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks")

    def counter_reason(self) -> str:
        return (
            f"NVML total energy counter (mJ) of {self.physical_label()}; "
            "advances in ~100 ms steps on many GPUs"
        )

    def instant_reason(self) -> str:
        return (
            f"no energy counter on {self.physical_label()}: NVML instant power "
            "(NVML_FI_DEV_POWER_INSTANT), sampled and integrated"
        )

    def average_reason(self) -> str:
        return (
            f"no energy counter on {self.physical_label()}: NVML power usage "
            "(nvmlDeviceGetPowerUsage, a 1-s average on many boards, so short windows are "
            "smeared), sampled and integrated"
        )
