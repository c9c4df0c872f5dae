"""AMD GPUs as an energy source, through amdsmi (``harness.sensors.gpu.amd``).

* ``amdsmi_get_energy_count``: a 64-bit accumulator in counts of ``counter_resolution`` µJ, read
  at window edges; a step back is a wrap when the forward distance fits what a GPU can draw in the
  time, else a reset.
* Boards without it: ``current_socket_power`` (W) where the board has it, else
  ``average_socket_power``, sampled and integrated.

Some boards' counters disagree with their power readings (ROCm/amdsmi issue 38):
``harness sensors --check`` integrates the power against the counter and fails a domain whose two
differ. How domains are numbered (``HIP_VISIBLE_DEVICES``, then ``CUDA_VISIBLE_DEVICES``) and read
is ``harness.sensors.gpu.source``, shared with NVML.
"""

from __future__ import annotations

import importlib.util
import sys

from harness.sensors.gpu.source import GpuSource


class AmdsmiSource(GpuSource):
    """Energy of each visible AMD GPU (the amdsmi counter, or sampled socket power)."""

    name = "amdsmi"
    index_key = "amdsmi_index"
    none_found = "amdsmi found no AMD GPU"

    def installed(self) -> bool:
        """amdsmi comes with ROCm: without it there is no AMD GPU to read, and ``--check`` says
        nothing of it (``harness sensors`` still lists why)."""
        if "amdsmi" in sys.modules:
            return sys.modules["amdsmi"] is not None
        try:
            return importlib.util.find_spec("amdsmi") is not None
        except (ImportError, ValueError):
            return False
