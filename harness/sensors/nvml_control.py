"""NVIDIA GPU knobs through NVML: the power limit and locked SM clocks.

The reading side of NVML is ``harness.sensors.nvml``; this is the writing side, kept apart so that a
meter never holds a handle that can change the machine. Both follow the device-layer rule: nothing
outside ``harness/sensors`` imports ``pynvml``.

A profile names its GPU as CUDA does (``cuda:N``, after ``CUDA_VISIBLE_DEVICES``); the GPU is then
remembered by UUID, so that a restore after a crash finds the same board even if the visible
devices changed in between. Setting either knob needs root (or CAP_SYS_ADMIN); NVML's refusal
becomes a ``KnobPermissionError`` that says so in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from harness.errors import KnobError, KnobPermissionError
from harness.sensors.cuda_visible import visible as visible_gpus

GRANT = "run the harness as root, or give it CAP_SYS_ADMIN (in a container: --cap-add SYS_ADMIN)"
_ERR_NOT_SUPPORTED = 3
_ERR_NO_PERMISSION = 4


@dataclass
class Gpu:
    """One GPU as NVML numbers it."""

    index: int
    uuid: str
    name: str
    handle: Any = None

    def label(self) -> str:
        return f"GPU {self.index} ({self.name} {self.uuid})"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlControl:
    """An NVML session for changing GPUs; a context manager that shuts NVML down after."""

    def __init__(self) -> None:
        try:
            import pynvml
        except Exception as e:
            raise KnobError(f"pynvml not importable (pip install nvidia-ml-py): {e}") from None
        try:
            pynvml.nvmlInit()
        except Exception as e:
            raise KnobError(f"NVML cannot start (no NVIDIA driver?): {_describe(e)}") from None
        self._nv = pynvml

    def __enter__(self) -> NvmlControl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        nv, self._nv = self._nv, None
        if nv is not None:
            try:
                nv.nvmlShutdown()
            except Exception:
                pass  # nothing useful to do about a failing shutdown

    # ------------------------------------------------------------------ finding a GPU
    def _all(self) -> list[Gpu]:
        nv = self._nv
        gpus = []
        for i in range(self._call("nvmlDeviceGetCount", None)):
            h = self._call("nvmlDeviceGetHandleByIndex", None, i)
            uuid = _text(self._call("nvmlDeviceGetUUID", None, h))
            gpus.append(Gpu(i, uuid, _text(nv.nvmlDeviceGetName(h)), h))
        return gpus

    def by_cuda_index(self, cuda_index: int) -> Gpu:
        """The GPU a profile's ``cuda:N`` runs on, in this process's CUDA numbering."""
        gpus = self._all()
        shown, problem = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"), gpus, self._nv)
        if cuda_index >= len(shown):
            why = f" ({problem})" if problem else ""
            raise KnobError(f"cuda:{cuda_index}: NVML sees only {len(shown)} visible GPU(s){why}")
        return shown[cuda_index][1]

    def by_uuid(self, uuid: str) -> Gpu:
        for gpu in self._all():
            if gpu.uuid == uuid:
                return gpu
        raise KnobError(f"no GPU with UUID {uuid} on this machine")

    # ------------------------------------------------------------------ power limit
    def power_limit_w(self, gpu: Gpu) -> float:
        """The power management limit in force (what ``nvidia-smi -pl`` sets)."""
        return self._call("nvmlDeviceGetPowerManagementLimit", gpu, gpu.handle) / 1000.0

    def power_limit_range_w(self, gpu: Gpu) -> tuple[float, float] | None:
        """(lowest, highest) limit the board accepts; None where the driver does not say."""
        try:
            low, high = self._call("nvmlDeviceGetPowerManagementLimitConstraints", gpu, gpu.handle)
        except KnobError:
            return None
        return low / 1000.0, high / 1000.0

    def set_power_limit_w(self, gpu: Gpu, watts: float) -> None:
        span = self.power_limit_range_w(gpu)
        if span is not None and not span[0] <= watts <= span[1]:
            raise KnobError(
                f"{watts:g} W is outside what {gpu.label()} accepts ({span[0]:g}-{span[1]:g} W)"
            )
        self._call("nvmlDeviceSetPowerManagementLimit", gpu, gpu.handle, int(round(watts * 1000)))

    # ------------------------------------------------------------------ locked clocks
    def lock_clocks_mhz(self, gpu: Gpu, low_mhz: int, high_mhz: int) -> None:
        self._call("nvmlDeviceSetGpuLockedClocks", gpu, gpu.handle, int(low_mhz), int(high_mhz))

    def reset_clocks(self, gpu: Gpu) -> None:
        self._call("nvmlDeviceResetGpuLockedClocks", gpu, gpu.handle)

    # ------------------------------------------------------------------ errors
    def _call(self, fn: str, gpu: Gpu | None, *args):
        """``pynvml.fn(*args)``, its errors as one line naming the call and the GPU."""
        nv = self._nv
        where = f" on {gpu.label()}" if gpu is not None else ""
        try:
            return getattr(nv, fn)(*args)
        except AttributeError:
            raise KnobError(f"{fn}: not in this pynvml (upgrade nvidia-ml-py)") from None
        except Exception as e:
            code = getattr(e, "value", None)
            if code == getattr(nv, "NVML_ERROR_NO_PERMISSION", _ERR_NO_PERMISSION):
                raise KnobPermissionError(f"{fn}{where}: not permitted; {GRANT}") from None
            if code == getattr(nv, "NVML_ERROR_NOT_SUPPORTED", _ERR_NOT_SUPPORTED):
                raise KnobError(f"{fn}{where}: not supported by this GPU or driver") from None
            raise KnobError(f"{fn}{where}: NVML error: {_describe(e)}") from None


def _describe(e: Exception) -> str:
    try:
        text = str(e)
    except Exception:  # pynvml's __str__ asks the library, which may be what failed
        text = ""
    return text or type(e).__name__
