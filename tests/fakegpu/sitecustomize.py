"""A fake NVIDIA GPU for dry runs of scripts/gpu-check.sh: put this folder and tests/ on PYTHONPATH
and every Python process started then (the harness CLI, its workers) imports the fake ``pynvml``
of tests/fakenvml.py in place of the real one.

The GPU draws ``FAKE_GPU_W`` watts (default 100) from the moment the process starts reading it;
its energy counter (mJ) and its instant power agree, so a counter-against-power check passes;
``FAKE_GPU_COUNTER_GAIN`` (default 1) makes the counter run fast or slow against its power.
Only for dry runs: never present a figure of this GPU as a measurement.
"""

from __future__ import annotations

import os
import sys
import time

try:
    import fakenvml
except ImportError:  # tests/ not on the path: leave the real pynvml alone
    fakenvml = None

if fakenvml is not None:
    _WATTS = float(os.environ.get("FAKE_GPU_W", "100"))
    _GAIN = float(os.environ.get("FAKE_GPU_COUNTER_GAIN", "1"))
    # wall time: every process of the dry run sees one counter, as they would one real GPU
    _T0 = 1.7e9

    def _energy_mj() -> int:
        return int((time.time() - _T0) * _WATTS * _GAIN * 1000)

    _gpu = fakenvml.FakeGpu(
        "Fake GPU (dry run)",
        "GPU-00000000-0000-0000-0000-000000000000",
        energy_mj=_energy_mj,
        power_mw=int(_WATTS * 1000),
        temp_c=40,
        sm_clock_mhz=1500,
        power_limit_mw=300_000,
        power_limit_range_mw=(100_000, 350_000),
    )
    sys.modules["pynvml"] = fakenvml.module([_gpu])
