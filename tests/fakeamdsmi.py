"""A fake ``amdsmi`` module, shaped like ROCm's, for testing the AMD GPU layer without a GPU.

Install it at the import boundary::

    fake = fakeamdsmi.module([fakeamdsmi.FakeAmdGpu("AMD Instinct MI300X", energy_uj=...)])
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVIDIA here

Names, return codes and shapes follow amdsmi's Python interface (ROCm 6.2 and later):
``AmdSmiLibraryException(err_code)`` with ``get_error_code``; ``amdsmi_get_energy_count`` returns
``energy_accumulator`` (a 64-bit count) and ``counter_resolution`` (µJ per count); socket power
in W (``"N/A"`` where the board has none); power caps in µW; clocks in MHz.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

STATUS = {
    "AMDSMI_STATUS_INVAL": 1,
    "AMDSMI_STATUS_NOT_SUPPORTED": 2,
    "AMDSMI_STATUS_NO_PERM": 10,
    "AMDSMI_STATUS_INIT_ERROR": 18,
    "AMDSMI_STATUS_NOT_FOUND": 31,
    "AMDSMI_STATUS_NOT_INIT": 32,
    "AMDSMI_STATUS_DRIVER_NOT_LOADED": 34,
}
WRAP = 2**64
#: µJ per count of the energy accumulator on MI200/MI300 boards
RESOLUTION_UJ = 15.259


class AmdSmiException(Exception):
    """Base of amdsmi's exceptions."""


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int):
        err_code = abs(err_code)
        super().__init__(err_code)
        self.err_code = err_code
        names = {v: k for k, v in STATUS.items()}
        self.err_info = names.get(err_code, "AMDSMI_STATUS_UNKNOWN_ERROR")

    def __str__(self) -> str:
        return f"An error occured with code: {self.err_code}({self.err_info})"

    def get_error_code(self) -> int:
        return self.err_code

    def get_error_info(self) -> str:
        return self.err_info


def error(name: str) -> AmdSmiLibraryException:
    return AmdSmiLibraryException(STATUS[name])


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    VRAM = 2


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0


class AmdSmiClkType(IntEnum):
    SYS = 0
    GFX = 0
    MEM = 4


@dataclass
class FakeAmdGpu:
    """One AMD GPU. ``energy_uj``: the true energy (µJ) since the driver loaded, a number or a
    callable, None when the board has no counter; the accumulator holds it in counts of
    ``resolution_uj`` from ``start_count`` on, modulo 2**64. ``current_w`` / ``average_w``: socket
    power in W, ``"N/A"`` where the board has none. ``errors``: function name -> exception."""

    name: str
    uuid: str
    energy_uj: float | Callable[[], float] | None = None
    resolution_uj: float = RESOLUTION_UJ
    start_count: int = 0
    #: before ROCm 6.2.1 the count came under the key "power"
    old_api: bool = False
    current_w: int | str | Callable[[], int] = 200
    average_w: int | str | Callable[[], int] = 200
    temp_c: int = 55
    gfx_mhz: int = 1700
    clock_range_mhz: tuple[int, int] = (500, 2100)
    #: power caps (µW)
    power_cap_uw: int = 750_000_000
    power_cap_range_uw: tuple[int, int] = (300_000_000, 750_000_000)
    pids: list[int] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)
    #: every change made through the setters, in order: ("power_cap_uw", 500000000), ...
    changes: list[tuple] = field(default_factory=list)

    def count(self) -> int:
        uj = self.energy_uj() if callable(self.energy_uj) else self.energy_uj
        return (self.start_count + int(uj / self.resolution_uj)) % WRAP


def _get(value):
    return value() if callable(value) else value


def module(gpus: list[FakeAmdGpu], init_error: Exception | None = None) -> types.ModuleType:
    """A fresh fake amdsmi. ``calls`` on it counts init, shut_down and energy reads."""
    m = types.ModuleType("amdsmi")
    m.AmdSmiException = AmdSmiException
    m.AmdSmiLibraryException = AmdSmiLibraryException
    m.AmdSmiTemperatureType = AmdSmiTemperatureType
    m.AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    m.AmdSmiClkType = AmdSmiClkType
    m.calls = {"init": 0, "shutdown": 0, "energy": 0}
    m.gpus = gpus
    state = {"initialised": False}

    def check(gpu: FakeAmdGpu, fn: str) -> None:
        if not state["initialised"]:
            raise error("AMDSMI_STATUS_NOT_INIT")
        if fn in gpu.errors:
            raise gpu.errors[fn]

    def amdsmi_init(flag=None):
        m.calls["init"] += 1
        if init_error is not None:
            raise init_error
        state["initialised"] = True

    def amdsmi_shut_down():
        m.calls["shutdown"] += 1
        state["initialised"] = False

    def amdsmi_get_processor_handles():
        if not state["initialised"]:
            raise error("AMDSMI_STATUS_NOT_INIT")
        return list(gpus)

    def amdsmi_get_gpu_device_uuid(gpu):
        check(gpu, "amdsmi_get_gpu_device_uuid")
        return gpu.uuid

    def amdsmi_get_gpu_asic_info(gpu):
        check(gpu, "amdsmi_get_gpu_asic_info")
        return {"market_name": gpu.name, "vendor_id": "0x1002", "device_id": "0x74a1"}

    def amdsmi_get_gpu_driver_info(gpu):
        check(gpu, "amdsmi_get_gpu_driver_info")
        return {"driver_name": "amdgpu", "driver_version": "6.8.5", "driver_date": "2024/01/01"}

    def amdsmi_get_energy_count(gpu):
        check(gpu, "amdsmi_get_energy_count")
        m.calls["energy"] += 1
        if gpu.energy_uj is None:
            raise error("AMDSMI_STATUS_NOT_SUPPORTED")
        key = "power" if gpu.old_api else "energy_accumulator"
        return {key: gpu.count(), "counter_resolution": gpu.resolution_uj, "timestamp": 0}

    def amdsmi_get_power_info(gpu):
        check(gpu, "amdsmi_get_power_info")
        return {
            "current_socket_power": _get(gpu.current_w),
            "average_socket_power": _get(gpu.average_w),
            "gfx_voltage": 900,
            "power_limit": gpu.power_cap_uw // 1_000_000,
        }

    def amdsmi_get_power_cap_info(gpu):
        check(gpu, "amdsmi_get_power_cap_info")
        low, high = gpu.power_cap_range_uw
        return {
            "power_cap": gpu.power_cap_uw,
            "default_power_cap": high,
            "dpm_cap": 0,
            "min_power_cap": low,
            "max_power_cap": high,
        }

    def amdsmi_set_power_cap(gpu, sensor_ind, cap):
        check(gpu, "amdsmi_set_power_cap")
        low, high = gpu.power_cap_range_uw
        if not low <= cap <= high:
            raise error("AMDSMI_STATUS_INVAL")
        gpu.power_cap_uw = int(cap)
        gpu.changes.append(("power_cap_uw", int(cap)))

    def amdsmi_get_temp_metric(gpu, sensor_type, metric):
        check(gpu, "amdsmi_get_temp_metric")
        return gpu.temp_c

    def amdsmi_get_clock_info(gpu, clk_type):
        check(gpu, "amdsmi_get_clock_info")
        low, high = gpu.clock_range_mhz
        return {"clk": gpu.gfx_mhz, "min_clk": low, "max_clk": high, "clk_locked": 0}

    def amdsmi_set_gpu_clk_range(gpu, min_clk_value, max_clk_value, clk_type):
        check(gpu, "amdsmi_set_gpu_clk_range")
        gpu.changes.append(("clk_range_mhz", (int(min_clk_value), int(max_clk_value))))

    def amdsmi_get_gpu_process_list(gpu):
        check(gpu, "amdsmi_get_gpu_process_list")
        return [{"name": "python", "pid": pid} for pid in gpu.pids]

    for fn in list(locals().values()):
        if callable(fn) and getattr(fn, "__name__", "").startswith("amdsmi_"):
            setattr(m, fn.__name__, fn)
    return m
