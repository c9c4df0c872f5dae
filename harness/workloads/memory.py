"""Peak memory of this process over a stretch of work: resident memory and CUDA memory.

On Linux the kernel keeps the resident high-water mark (``VmHWM``) itself, and writing ``5`` to
``/proc/self/clear_refs`` resets it, so a repetition's true peak costs two file operations and no
sampling thread. Where that is not possible the peak is the larger of the resident sizes read at
the two edges (an underestimate, the best a sampler-free reading can do).
"""

from __future__ import annotations

import sys
from pathlib import Path

MB = 2**20

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _vm_hwm_kb() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / MB
    except Exception:  # psutil missing or the process table unreadable: no figure
        return None


class PeakMemory:
    """``reset()`` before the work, ``read()`` after: ``{peak_rss_mb, peak_vram_mb}``."""

    def __init__(self, device=None):
        #: a torch.device; CUDA peaks are read only for a cuda device
        self.device = device
        self._kernel_peak = False
        self._rss_start_mb: float | None = None

    def _cuda(self):
        if self.device is None or getattr(self.device, "type", None) != "cuda":
            return None
        torch = sys.modules.get("torch")
        return torch.cuda if torch is not None else None

    def reset(self) -> None:
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the present resident size
            self._kernel_peak = _vm_hwm_kb() is not None
        except OSError:
            self._kernel_peak = False
        self._rss_start_mb = None if self._kernel_peak else _rss_mb()
        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict[str, float | None]:
        if self._kernel_peak:
            hwm_kb = _vm_hwm_kb()
            peak_rss = hwm_kb / 1024 if hwm_kb is not None else None
        else:
            edges = [v for v in (self._rss_start_mb, _rss_mb()) if v is not None]
            peak_rss = max(edges) if edges else None
        cuda = self._cuda()
        peak_vram = cuda.max_memory_allocated(self.device) / MB if cuda is not None else None
        return {"peak_rss_mb": peak_rss, "peak_vram_mb": peak_vram}
