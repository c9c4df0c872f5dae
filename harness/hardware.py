"""Hardware profiles (a suite's ``hardware`` entries) and facts about the host.

A profile is ``{name, device: "cpu"|"cuda:N", threads, memory_limit_mb, edge, resources}``.
An edge board is profiled as what it is to torch (a CPU, or cuda:0 on a Jetson), with a thread
count and a memory cap that stand for the board's limits. torch is imported only when needed, so
``harness sensors`` and the like stay fast.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import socket
from pathlib import Path

from harness.errors import HarnessError

_DEVICE = re.compile(r"^(cpu|cuda(?::(\d+))?)$")


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("cpu", None); ``"cuda"``/``"cuda:1"`` -> ("cuda", 0/1)."""
    m = _DEVICE.match(str(device).strip())
    if not m:
        raise HarnessError(f"unknown device {device!r} (use cpu or cuda:N)")
    if m.group(1) == "cpu":
        return "cpu", None
    return "cuda", int(m.group(2) or 0)


def torch_device(hw: dict):
    """The ``torch.device`` of a profile, after checking that torch can use it."""
    import torch

    kind, index = parse_device(hw.get("device", "cpu"))
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise HarnessError(f"{hw.get('device')} requested but torch sees no CUDA device")
    count = torch.cuda.device_count()
    if index >= count:
        raise HarnessError(
            f"{hw.get('device')} requested but torch sees only {count} CUDA device(s)"
        )
    return torch.device("cuda", index)


def apply_profile(hw: dict) -> None:
    """Make this process use the profile: check its device, set torch's thread count."""
    import torch

    torch_device(hw)
    threads = hw.get("threads")
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise HarnessError(f"hardware {hw.get('name')!r}: threads must be a positive integer")
        torch.set_num_threads(threads)


def check_memory(required_mb: float, hw: dict) -> None:
    """Refuse to load what would not fit the profile's memory cap (or the GPU's memory)."""
    limit = hw.get("memory_limit_mb")
    name = hw.get("name", hw.get("device", "?"))
    if limit is not None and required_mb > limit:
        raise HarnessError(
            f"the model needs about {required_mb:.0f} MB, more than hardware {name!r} allows "
            f"(memory_limit_mb: {limit})"
        )
    kind, index = parse_device(hw.get("device", "cpu"))
    if kind == "cuda":
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            total_mb = torch.cuda.get_device_properties(index).total_memory / 2**20
            if required_mb > total_mb:
                raise HarnessError(
                    f"the model needs about {required_mb:.0f} MB, more than {hw.get('device')} "
                    f"has ({total_mb:.0f} MB)"
                )


#: /proc/cpuinfo keys that name the CPU, best first: x86 ``model name``; ARM boards ``Model``
#: or ``Hardware``; older ARM kernels ``Processor``; MIPS ``cpu model``
_CPUINFO_MODEL_KEYS = ("model name", "Model", "Hardware", "Processor", "cpu model")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def is_virtual_machine() -> bool:
    """True on a virtual machine: the CPU flags carry ``hypervisor``."""
    return bool(re.search(r"^flags\s*:.*\bhypervisor\b", _cpuinfo(), re.MULTILINE))


def cpu_model_name() -> str | None:
    """This CPU's model name as /proc/cpuinfo gives it, else the platform's; None if unknown.

    The one place the model is parsed: host facts, device names and the TDP lookup of the
    estimate source all use it.
    """
    text = _cpuinfo()
    for key in _CPUINFO_MODEL_KEYS:
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return platform.processor() or None


def cpu_model() -> str:
    """The CPU's model name for display: ``cpu_model_name`` or the machine type."""
    return cpu_model_name() or platform.machine() or "unknown cpu"


def socket_count() -> int:
    """CPU sockets, from the distinct ``physical id`` values of /proc/cpuinfo (at least 1)."""
    found = set(re.findall(r"^physical id\s*:\s*(\d+)", _cpuinfo(), re.MULTILINE))
    return max(len(found), 1)


def logical_cores() -> int:
    """Cores this process may run on (its affinity), which can be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_mb() -> float | None:
    try:
        import psutil

        return psutil.virtual_memory().total / 2**20
    except ImportError:
        return None


def describe(hw: dict) -> dict:
    """device_name, cores, memory_mb (and driver for a GPU) of the device a profile uses."""
    kind, index = parse_device(hw.get("device", "cpu"))
    threads = hw.get("threads")
    if kind == "cpu":
        cores = logical_cores()
        return {
            "device_name": cpu_model(),
            "cores": min(threads, cores) if threads else cores,
            "memory_mb": memory_mb(),
        }
    import torch

    from harness.sensors.gpu import driver_version

    device = torch_device(hw)
    props = torch.cuda.get_device_properties(device)
    return {
        "device_name": props.name,
        "cores": props.multi_processor_count,
        "memory_mb": props.total_memory / 2**20,
        "driver": driver_version(),
        "cuda": torch.version.cuda,
    }


def host_facts() -> dict:
    """Facts about this machine for a run's manifest."""
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_mb": memory_mb(),
        "machine": platform.machine(),
        # a VM uses a share of its host: its embodied emissions are charged by that share
        "virtual_machine": is_virtual_machine(),
    }
