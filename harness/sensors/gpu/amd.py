"""AMD GPUs through amdsmi (ROCm's ``amdsmi`` Python module, which loads libamd_smi).

The one place in the harness that opens amdsmi: ``AmdGpus()`` calls ``amdsmi_init`` and ``close``
calls ``amdsmi_shut_down``. Every call goes through ``AmdGpus.call``, which turns an
``AmdSmiLibraryException`` into the ``GpuError`` family naming the call and the GPU.

Units as amdsmi gives them: ``amdsmi_get_energy_count`` returns ``energy_accumulator`` (a 64-bit
count) and ``counter_resolution`` (µJ per count, about 15.3 on MI200/MI300), so the counter's unit
is ``counter_resolution`` µJ and it wraps at 2**64 counts; older amdsmi (before ROCm 6.2.1) names
the count ``power``. Socket power is in W (``"N/A"`` where the board has none); power caps are µW;
clocks MHz. Some boards' counters were found wrong (ROCm/amdsmi issue 38, seen by Zeus's users):
``harness sensors --check`` compares the counter with integrated power, as for NVML.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from harness.sensors.gpu.common import (
    BrokenGpu,
    Gpu,
    GpuError,
    GpuNoDriver,
    GpuNotSupported,
    GpuPermissionError,
    Gpus,
    describe,
    text,
)

#: the energy accumulator is a 64-bit count
ENERGY_WRAP = 2**64
NO_LIBRARY = "amdsmi not importable (install ROCm and its amdsmi Python package)"
NO_DRIVER = "amdgpu driver not loaded or ROCm's libamd_smi not found"
PERMISSION = (
    "amdsmi: insufficient permissions; this user needs access to /dev/kfd and /dev/dri "
    "(add it to the render and video groups)"
)

# amdsmi status codes (amdsmi.h, AmdSmiRetCode)
_NOT_SUPPORTED = 2
_NOT_YET_IMPLEMENTED = 15
_NO_PERM = 10
_INIT_ERROR = 18
_NOT_FOUND = 31
_NOT_INIT = 32
_DRIVER_NOT_LOADED = 34
_NO_DRV = 51
_FILE_NOT_FOUND = 52
# enum values used when the amdsmi in hand does not name them
_TEMP_HOTSPOT, _TEMP_CURRENT, _CLK_GFX = 1, 0, 0


def vendor_error(e: Exception, call: str, where: str = "") -> GpuError:
    """An amdsmi exception as the harness's own: the one mapping of amdsmi's errors."""
    code = getattr(e, "err_code", None)
    if code is None and hasattr(e, "get_error_code"):
        code = e.get_error_code()
    if code in (_NOT_SUPPORTED, _NOT_YET_IMPLEMENTED):
        return GpuNotSupported(call, "not supported by this GPU or driver", where)
    if code == _NO_PERM:
        return GpuPermissionError(call, PERMISSION, where)
    if code in (_DRIVER_NOT_LOADED, _NO_DRV, _FILE_NOT_FOUND, _INIT_ERROR, _NOT_INIT):
        return GpuNoDriver(call, NO_DRIVER, where)
    if code == _NOT_FOUND:
        return GpuError(call, "GPU not found (removed, or reset since)", where)
    return GpuError(call, f"amdsmi error: {describe(e)}", where)


class AmdGpus(Gpus):
    """An amdsmi session. Raises ``GpuNoDriver`` without amdsmi, ROCm or the amdgpu driver."""

    vendor = "amdsmi"
    library = "amdsmi"
    # ROCm honours HIP_VISIBLE_DEVICES, and CUDA_VISIBLE_DEVICES where that is unset
    visible_env = ("HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")

    def __init__(self) -> None:
        try:
            # amdsmi prints to stdout on import when libamd_smi.so is missing
            with contextlib.redirect_stdout(io.StringIO()):
                import amdsmi
        except ImportError as e:
            raise GpuNoDriver("import amdsmi", f"{NO_LIBRARY}: {e}") from None
        except Exception as e:  # OSError, KeyError...: a library that does not match ROCm
            raise GpuNoDriver("import amdsmi", f"{NO_DRIVER}: {describe(e)}") from None
        try:
            amdsmi.amdsmi_init()
        except Exception as e:
            raise vendor_error(e, "amdsmi_init") from None
        self.smi: Any = amdsmi
        self._all: list[Gpu | BrokenGpu] | None = None

    def call(self, fn: str, gpu: Gpu | None, *args, **kwargs) -> Any:
        """``amdsmi.fn(*args)``, its errors as a ``GpuError`` naming the call and the GPU."""
        try:
            return getattr(self.smi, fn)(*args, **kwargs)
        except AttributeError:
            raise GpuNotSupported(fn, "not in this amdsmi (upgrade it to match ROCm)") from None
        except Exception as e:
            raise vendor_error(e, fn, gpu.label() if gpu else "") from None

    def all(self) -> list[Gpu | BrokenGpu]:
        if self._all is None:
            handles = self.call("amdsmi_get_processor_handles", None)
            self._all = [self._one(i, h) for i, h in enumerate(handles)]
        return self._all

    def _one(self, index: int, handle: Any) -> AmdGpu | BrokenGpu:
        gpu = AmdGpu(self, index, handle)
        try:
            gpu.uuid = text(self.call("amdsmi_get_gpu_device_uuid", None, handle))
            gpu.name = text(self.call("amdsmi_get_gpu_asic_info", None, handle)["market_name"])
        except GpuError as e:
            return BrokenGpu(index, e)
        except (KeyError, TypeError) as e:
            return BrokenGpu(index, GpuError("amdsmi_get_gpu_asic_info", f"odd answer: {e}"))
        return gpu

    def driver_version(self) -> str | None:
        for gpu in self.all():
            if isinstance(gpu, AmdGpu):
                try:
                    info = self.call("amdsmi_get_gpu_driver_info", gpu, gpu.handle)
                    return text(info["driver_version"])
                except (GpuError, KeyError, TypeError):
                    return None
        return None

    def close(self) -> None:
        smi, self.smi = self.smi, None
        if smi is not None:
            try:
                smi.amdsmi_shut_down()
            except Exception:
                pass  # nothing useful to do about a failing shutdown


def _watts(value: Any, what: str, call: str, where: str) -> float:
    if isinstance(value, str) or value is None:  # "N/A": the board has no such reading
        raise GpuNotSupported(call, f"{what} reads {value!r} (not on this board)", where)
    return float(value)


class AmdGpu(Gpu):
    """One AMD GPU: energy in ``counter_resolution`` µJ counts, wrapping at 2**64."""

    library = "amdsmi"

    def __init__(self, session: AmdGpus, index: int, handle: Any):
        super().__init__(index, handle)
        self._s = session
        self.energy_wrap = ENERGY_WRAP
        self.energy_unit_j = 0.0  # known at the first read of the counter

    def _call(self, fn: str, *args, **kwargs) -> Any:
        return self._s.call(fn, self, self.handle, *args, **kwargs)

    def energy_count(self) -> int:
        answer = self._call("amdsmi_get_energy_count")
        try:
            count = (
                answer["energy_accumulator"] if "energy_accumulator" in answer else answer["power"]
            )
            resolution_uj = float(answer["counter_resolution"])
        except (KeyError, TypeError, ValueError) as e:
            raise GpuError("amdsmi_get_energy_count", f"odd answer: {e}", self.label()) from None
        if not resolution_uj > 0:
            raise GpuNotSupported(
                "amdsmi_get_energy_count", f"counter resolution {resolution_uj}", self.label()
            )
        self.energy_unit_j = resolution_uj * 1e-6
        return int(count)

    def _power(self, key: str) -> float:
        info = self._call("amdsmi_get_power_info")
        return _watts(info.get(key), key, "amdsmi_get_power_info", self.label())

    def instant_power_w(self) -> float:
        return self._power("current_socket_power")

    def average_power_w(self) -> float:
        return self._power("average_socket_power")

    def temperature_c(self) -> float:
        smi = self._s.smi
        kind = getattr(getattr(smi, "AmdSmiTemperatureType", None), "HOTSPOT", _TEMP_HOTSPOT)
        metric = getattr(getattr(smi, "AmdSmiTemperatureMetric", None), "CURRENT", _TEMP_CURRENT)
        return float(self._call("amdsmi_get_temp_metric", kind, metric))

    def _gfx(self) -> Any:
        return getattr(getattr(self._s.smi, "AmdSmiClkType", None), "GFX", _CLK_GFX)

    def sm_clock_mhz(self) -> float:
        return float(self._call("amdsmi_get_clock_info", self._gfx())["clk"])

    def _cap_uw(self, key: str) -> float:
        return float(self._call("amdsmi_get_power_cap_info")[key])

    def enforced_power_limit_w(self) -> float:
        return self._cap_uw("power_cap") / 1e6

    def processes(self) -> list[int]:
        out = []
        for p in self._call("amdsmi_get_gpu_process_list"):
            pid = p.get("pid") if isinstance(p, dict) else getattr(p, "pid", None)
            if pid is not None:
                out.append(int(pid))
        return out

    def power_limit_w(self) -> float:
        return self._cap_uw("power_cap") / 1e6

    def power_limit_range_w(self) -> tuple[float, float]:
        info = self._call("amdsmi_get_power_cap_info")
        return float(info["min_power_cap"]) / 1e6, float(info["max_power_cap"]) / 1e6

    def set_power_limit_w(self, watts: float) -> None:
        self._call("amdsmi_set_power_cap", 0, int(round(watts * 1e6)))

    def lock_clocks_mhz(self, low_mhz: int, high_mhz: int) -> None:
        self._call("amdsmi_set_gpu_clk_range", int(low_mhz), int(high_mhz), self._gfx())

    def reset_clocks(self) -> None:
        """Back to the board's whole range (amdsmi has no reset of a locked range)."""
        info = self._call("amdsmi_get_clock_info", self._gfx())
        self._call(
            "amdsmi_set_gpu_clk_range", int(info["min_clk"]), int(info["max_clk"]), self._gfx()
        )

    def counter_reason(self) -> str:
        return (
            f"amdsmi energy counter (amdsmi_get_energy_count, counts of counter_resolution µJ, "
            f"64-bit) of {self.physical_label()}"
        )

    def instant_reason(self) -> str:
        return (
            f"no energy counter on {self.physical_label()}: amdsmi current socket power, "
            "sampled and integrated"
        )

    def average_reason(self) -> str:
        return (
            f"no energy counter on {self.physical_label()}: amdsmi average socket power (an "
            "average, so short windows are smeared), sampled and integrated"
        )
