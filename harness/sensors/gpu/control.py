"""GPU knobs through the device layer: the power limit and locked SM clocks, on any vendor.

The reading side is the energy sources (``harness.sensors.nvml``, ``harness.sensors.amdsmi``);
this is the writing side, kept apart so that a meter never holds a session that changes the
machine. A profile names its GPU as CUDA (or HIP) does (``cuda:N``); the GPU is then remembered
by vendor and UUID, so that a restore after a crash finds the same board even if the visible
devices changed in between. Setting either knob needs root (or CAP_SYS_ADMIN); the vendor's
refusal becomes a ``KnobPermissionError`` that says so in one line.
"""

from __future__ import annotations

from harness.errors import KnobError, KnobPermissionError
from harness.sensors.gpu import VENDORS, Gpu, GpuError, GpuPermissionError, Gpus, open_gpus
from harness.sensors.gpu import visible as visible_gpus

GRANT = "run the harness as root, or give it CAP_SYS_ADMIN (in a container: --cap-add SYS_ADMIN)"


def _knob_error(e: GpuError) -> KnobError:
    where = f" on {e.where}" if e.where else ""
    if isinstance(e, GpuPermissionError):
        return KnobPermissionError(f"{e.call}{where}: not permitted; {GRANT}")
    return KnobError(str(e))


class GpuControl:
    """A vendor session for changing GPUs; a context manager that closes it after.

    ``vendor`` None: the first vendor (in ``VENDORS`` order) whose library lists a GPU here.
    """

    def __init__(self, vendor: str | None = None) -> None:
        problems = []
        for name in [vendor] if vendor else list(VENDORS):
            try:
                session = open_gpus(name)
            except GpuError as e:
                problems.append(e.problem)
                continue
            try:
                found = session.all()
            except GpuError as e:
                session.close()
                raise _knob_error(e) from None
            if found or vendor:
                self.gpus: Gpus = session
                return
            session.close()
            problems.append(f"{session.library} lists no GPU")
        raise KnobError("no GPU to set: " + "; ".join(problems))

    @property
    def vendor(self) -> str:
        return self.gpus.vendor

    def __enter__(self) -> GpuControl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.gpus.close()

    # ------------------------------------------------------------------ finding a GPU
    def by_cuda_index(self, cuda_index: int) -> Gpu:
        """The GPU a profile's ``cuda:N`` runs on, in this process's CUDA (HIP) numbering."""
        try:
            shown, problem = visible_gpus(self.gpus)
        except GpuError as e:
            raise _knob_error(e) from None
        if cuda_index >= len(shown):
            why = f" ({problem})" if problem else ""
            raise KnobError(
                f"cuda:{cuda_index}: {self.gpus.library} sees only {len(shown)} visible GPU(s){why}"
            )
        gpu = shown[cuda_index][1]
        if not isinstance(gpu, Gpu):
            raise _knob_error(gpu.error)
        return gpu

    def by_uuid(self, uuid: str) -> Gpu:
        try:
            gpu = self.gpus.by_uuid(uuid)
        except GpuError as e:
            raise _knob_error(e) from None
        if gpu is None:
            raise KnobError(f"no GPU with UUID {uuid} on this machine")
        return gpu

    # ------------------------------------------------------------------ power limit
    def power_limit_w(self, gpu: Gpu) -> float:
        """The power management limit in force (what ``nvidia-smi -pl`` sets)."""
        try:
            return gpu.power_limit_w()
        except GpuError as e:
            raise _knob_error(e) from None

    def power_limit_range_w(self, gpu: Gpu) -> tuple[float, float] | None:
        """(lowest, highest) limit the board accepts; None where the driver does not say."""
        try:
            return gpu.power_limit_range_w()
        except GpuError:
            return None

    def set_power_limit_w(self, gpu: Gpu, watts: float) -> None:
        span = self.power_limit_range_w(gpu)
        if span is not None and not span[0] <= watts <= span[1]:
            raise KnobError(
                f"{watts:g} W is outside what {gpu.label()} accepts ({span[0]:g}-{span[1]:g} W)"
            )
        try:
            gpu.set_power_limit_w(watts)
        except GpuError as e:
            raise _knob_error(e) from None

    # ------------------------------------------------------------------ locked clocks
    def lock_clocks_mhz(self, gpu: Gpu, low_mhz: int, high_mhz: int) -> None:
        try:
            gpu.lock_clocks_mhz(low_mhz, high_mhz)
        except GpuError as e:
            raise _knob_error(e) from None

    def reset_clocks(self, gpu: Gpu) -> None:
        try:
            gpu.reset_clocks()
        except GpuError as e:
            raise _knob_error(e) from None
