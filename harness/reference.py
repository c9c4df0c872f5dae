"""The reference case: a fixed loop whose work never changes, measured beside every case.

A case that got slower between two runs either runs slower code or ran on a slower machine (other
work on a shared host, a lower clock, heat). The loop tells them apart: it does the same work in
every run, so its time and energy move only with the machine. Each case measures it with its own
meter, right before its repetitions, into ``cases/<case_id>/reference.json``; ``harness compare``
reads how much the machine moved case by case. About a fifth of a second a case.
"""

from __future__ import annotations

import statistics
from pathlib import Path

#: the file beside result.json
REFERENCE_FILE = "reference.json"
#: the loop's size and the windows measured; changing either makes older references incomparable
LOOP_ITERATIONS = 400_000
WINDOWS = 3
VERSION = 1


def fixed_loop(iterations: int = LOOP_ITERATIONS) -> int:
    """Pure-Python integer work, the same in every run (one core; no library that could change)."""
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return total


def measure(meter, case_dir: Path) -> dict:
    """Measure the loop ``WINDOWS`` times with ``meter`` and write reference.json; returns it."""
    from harness import store

    windows = []
    for i in range(WINDOWS):
        with meter.window(f"reference-{i}") as w:
            fixed_loop()
        m = w.measurement
        windows.append(
            {"duration_s": m.duration_s, "energy_j": m.total_j, "warnings": list(m.warnings)}
        )
    data = {
        "version": VERSION,
        "loop_iterations": LOOP_ITERATIONS,
        "method": meter.method,
        "duration_s": statistics.median(w["duration_s"] for w in windows),
        "energy_j": statistics.median(w["energy_j"] for w in windows),
        "windows": windows,
    }
    store.write_json(Path(case_dir) / REFERENCE_FILE, data)
    return data


def read(case_dir: Path) -> dict | None:
    """reference.json of a case folder, or None (absent, unreadable, another loop)."""
    from harness import store

    try:
        data = store.read_json(Path(case_dir) / REFERENCE_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    if not all(isinstance(data.get(k), (int, float)) and data[k] > 0 for k in ("duration_s",)):
        return None
    return data
