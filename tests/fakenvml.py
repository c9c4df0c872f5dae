"""A fake ``pynvml`` module, shaped like nvidia-ml-py's, for testing the NVML source without a GPU.

Install it at the import boundary::

    fake = fakenvml.module([fakenvml.FakeGpu("Tesla V100", energy_mj=0)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)

Names, return codes and shapes follow nvidia-ml-py 13 (``pynvml.py``): ``NVMLError(value)``
turns into its ``NVMLError_<Name>`` subclass, ``nvmlDeviceGetFieldValues`` returns structures with
``.nvmlReturn`` and ``.value.uiVal``, energy is in mJ and power in mW.
"""

from __future__ import annotations

import math
import string
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

NVML_SUCCESS = 0
ERRORS = {
    "NVML_ERROR_UNINITIALIZED": 1,
    "NVML_ERROR_INVALID_ARGUMENT": 2,
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_GPU_IS_LOST": 15,
    "NVML_ERROR_UNKNOWN": 999,
}
NVML_FI_DEV_POWER_INSTANT = 186
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1


class NVMLError(Exception):
    """Mirrors pynvml.NVMLError: ``NVMLError(code)`` is an instance of the code's subclass."""

    _value_class: dict[int, type] = {}

    def __new__(cls, value: int):
        if cls is NVMLError:
            cls = NVMLError._value_class.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int):
        super().__init__(value)

    def __str__(self) -> str:
        names = {v: k for k, v in ERRORS.items()}
        return names.get(self.value, f"NVML Error with code {self.value}")


def _error_classes() -> dict[str, type]:
    classes = {}
    for err_name, value in ERRORS.items():
        name = "NVMLError_" + string.capwords(err_name.replace("NVML_ERROR_", ""), "_").replace(
            "_", ""
        )

        def new(cls, *args, _value=value):
            return NVMLError.__new__(cls, _value)

        def init(self, *args, _value=value):
            Exception.__init__(self, _value)

        cls = type(name, (NVMLError,), {"__new__": new, "__init__": init})
        NVMLError._value_class[value] = cls
        classes[name] = cls
    return classes


ERROR_CLASSES = _error_classes()
NotSupported = ERROR_CLASSES["NVMLError_NotSupported"]
NoPermission = ERROR_CLASSES["NVMLError_NoPermission"]
LibraryNotFound = ERROR_CLASSES["NVMLError_LibraryNotFound"]
DriverNotLoaded = ERROR_CLASSES["NVMLError_DriverNotLoaded"]
GpuIsLost = ERROR_CLASSES["NVMLError_GpuIsLost"]


@dataclass
class FakeGpu:
    """One physical GPU. ``energy_mj``/``power_mw``: a number, a callable, or None (not supported).

    ``instant``: whether the NVML_FI_DEV_POWER_INSTANT field works. ``mig``: None (not supported,
    pre-Ampere) or the (current, pending) MIG mode. ``errors``: function name -> exception raised.
    """

    name: str
    uuid: str
    energy_mj: int | Callable[[], int] | None = None
    power_mw: int | Callable[[], int] | None = 100_000
    instant: bool = True
    mig: tuple[int, int] | None = None
    mig_uuids: list[str] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)
    temp_c: int | Callable[[], int] | None = None
    sm_clock_mhz: int | None = None
    #: the power management limit (mW): what the enforced limit reads, and what a set changes
    power_limit_mw: int | None = None
    #: (lowest, highest) limit the board accepts (mW); None: the constraints call is unsupported
    power_limit_range_mw: tuple[int, int] | None = None
    #: (low, high) locked SM clocks (MHz), None when unlocked
    locked_clocks_mhz: tuple[int, int] | None = None
    #: every change made through the setters, in order: ("power_limit_mw", 200000), ...
    changes: list[tuple] = field(default_factory=list)


class _Value:
    __slots__ = ("uiVal", "ullVal", "dVal")

    def __init__(self, v: int):
        self.uiVal = self.ullVal = v
        self.dVal = float(v)


class _FieldValue:
    """Shaped like pynvml.c_nvmlFieldValue_t."""

    def __init__(self, field_id: int, ret: int, v: int):
        self.fieldId = field_id
        self.scopeId = 0
        self.nvmlReturn = ret
        self.value = _Value(v)


def _get(value):
    return value() if callable(value) else value


def metered_gpu(name: str, uuid: str, *, counter_gain: float = 1.0, update_s: float = 0.1):
    """A GPU whose instant power is a wave in time (150 W ± 50 W, 0.7 s period) and whose energy
    counter is that power's exact integral times ``counter_gain`` (1.1: a counter 10 % fast),
    stepping every ``update_s`` like NVML's; both are callables of ``time.perf_counter``."""
    t0 = time.perf_counter()
    w = 2 * math.pi / 0.7

    def power_mw() -> int:
        return int(1000 * (150 + 50 * math.sin(w * (time.perf_counter() - t0))))

    def energy_mj() -> int:
        t = math.floor((time.perf_counter() - t0) / update_s) * update_s
        return int(1000 * counter_gain * (150 * t + 50 / w * (1 - math.cos(w * t))))

    return FakeGpu(name, uuid, energy_mj=energy_mj, power_mw=power_mw)


def module(gpus: list[FakeGpu], init_error: Exception | None = None) -> types.ModuleType:
    """A fresh fake pynvml. ``calls`` on it counts nvmlInit/nvmlShutdown and reads."""
    m = types.ModuleType("pynvml")
    m.__dict__.update(ERRORS)
    m.__dict__.update(ERROR_CLASSES)
    m.NVML_SUCCESS = NVML_SUCCESS
    m.NVML_FI_DEV_POWER_INSTANT = NVML_FI_DEV_POWER_INSTANT
    m.NVML_DEVICE_MIG_DISABLE = NVML_DEVICE_MIG_DISABLE
    m.NVML_DEVICE_MIG_ENABLE = NVML_DEVICE_MIG_ENABLE
    m.NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    m.NVML_CLOCK_SM = NVML_CLOCK_SM
    m.NVMLError = NVMLError
    m.calls = {"init": 0, "shutdown": 0, "energy": 0, "field": 0, "power": 0}
    m.gpus = gpus
    state = {"initialised": False}

    def check(gpu: FakeGpu, fn: str) -> None:
        if not state["initialised"]:
            raise NVMLError(ERRORS["NVML_ERROR_UNINITIALIZED"])
        if fn in gpu.errors:
            raise gpu.errors[fn]

    def nvmlInit():
        m.calls["init"] += 1
        if init_error is not None:
            raise init_error
        state["initialised"] = True

    def nvmlShutdown():
        m.calls["shutdown"] += 1
        state["initialised"] = False

    def nvmlDeviceGetCount():
        if not state["initialised"]:
            raise NVMLError(ERRORS["NVML_ERROR_UNINITIALIZED"])
        return len(gpus)

    def nvmlDeviceGetHandleByIndex(index):
        if not 0 <= index < len(gpus):
            raise NVMLError(ERRORS["NVML_ERROR_INVALID_ARGUMENT"])
        check(gpus[index], "nvmlDeviceGetHandleByIndex")
        return gpus[index]

    def nvmlDeviceGetHandleByUUID(uuid):
        for gpu in gpus:
            if gpu.uuid == uuid:
                return gpu
            if uuid in gpu.mig_uuids:
                return ("mig", gpu, uuid)
        raise NVMLError(ERRORS["NVML_ERROR_NOT_FOUND"])

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle):
        if not isinstance(handle, tuple):
            raise NVMLError(ERRORS["NVML_ERROR_INVALID_ARGUMENT"])
        return handle[1]

    def nvmlDeviceGetUUID(gpu):
        check(gpu, "nvmlDeviceGetUUID")
        return gpu.uuid

    def nvmlDeviceGetName(gpu):
        check(gpu, "nvmlDeviceGetName")
        return gpu.name

    def nvmlDeviceGetMigMode(gpu):
        check(gpu, "nvmlDeviceGetMigMode")
        if gpu.mig is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        return list(gpu.mig)

    def nvmlDeviceGetTotalEnergyConsumption(gpu):
        check(gpu, "nvmlDeviceGetTotalEnergyConsumption")
        m.calls["energy"] += 1
        if gpu.energy_mj is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        return int(_get(gpu.energy_mj))

    def nvmlDeviceGetFieldValues(gpu, field_ids):
        check(gpu, "nvmlDeviceGetFieldValues")
        m.calls["field"] += 1
        out = []
        for fid in field_ids:
            if fid == NVML_FI_DEV_POWER_INSTANT and gpu.instant and gpu.power_mw is not None:
                out.append(_FieldValue(fid, NVML_SUCCESS, int(_get(gpu.power_mw))))
            else:
                out.append(_FieldValue(fid, ERRORS["NVML_ERROR_NOT_SUPPORTED"], 0))
        return out

    def nvmlDeviceGetPowerUsage(gpu):
        check(gpu, "nvmlDeviceGetPowerUsage")
        m.calls["power"] += 1
        if gpu.power_mw is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        return int(_get(gpu.power_mw))

    def optional(gpu: FakeGpu, fn: str, value):
        check(gpu, fn)
        if value is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        return int(_get(value))

    def nvmlDeviceGetTemperature(gpu, sensor):
        return optional(gpu, "nvmlDeviceGetTemperature", gpu.temp_c)

    def nvmlDeviceGetClockInfo(gpu, clock):
        return optional(gpu, "nvmlDeviceGetClockInfo", gpu.sm_clock_mhz)

    def nvmlDeviceGetEnforcedPowerLimit(gpu):
        return optional(gpu, "nvmlDeviceGetEnforcedPowerLimit", gpu.power_limit_mw)

    def nvmlDeviceGetPowerManagementLimit(gpu):
        return optional(gpu, "nvmlDeviceGetPowerManagementLimit", gpu.power_limit_mw)

    def nvmlDeviceGetPowerManagementLimitConstraints(gpu):
        check(gpu, "nvmlDeviceGetPowerManagementLimitConstraints")
        if gpu.power_limit_range_mw is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        return list(gpu.power_limit_range_mw)

    def nvmlDeviceSetPowerManagementLimit(gpu, limit_mw):
        check(gpu, "nvmlDeviceSetPowerManagementLimit")
        if gpu.power_limit_mw is None:
            raise NVMLError(ERRORS["NVML_ERROR_NOT_SUPPORTED"])
        low, high = gpu.power_limit_range_mw or (0, 2**32 - 1)
        if not low <= limit_mw <= high:
            raise NVMLError(ERRORS["NVML_ERROR_INVALID_ARGUMENT"])
        gpu.power_limit_mw = int(limit_mw)
        gpu.changes.append(("power_limit_mw", int(limit_mw)))

    def nvmlDeviceSetGpuLockedClocks(gpu, low_mhz, high_mhz):
        check(gpu, "nvmlDeviceSetGpuLockedClocks")
        gpu.locked_clocks_mhz = (int(low_mhz), int(high_mhz))
        gpu.changes.append(("locked_clocks_mhz", gpu.locked_clocks_mhz))

    def nvmlDeviceResetGpuLockedClocks(gpu):
        check(gpu, "nvmlDeviceResetGpuLockedClocks")
        gpu.locked_clocks_mhz = None
        gpu.changes.append(("locked_clocks_mhz", None))

    def nvmlSystemGetDriverVersion():
        return "550.54.15"

    for fn in list(locals().values()):
        if callable(fn) and getattr(fn, "__name__", "").startswith("nvml"):
            setattr(m, fn.__name__, fn)
    return m
