"""energy-harness: what machine learning costs in energy and carbon, and what it buys."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from harness.meter import Measurement, Meter

__all__ = ["Measurement", "Meter", "load_results", "run_suite", "track", "__version__"]


def __getattr__(name: str):
    # Imported on first use: `import harness` stays cheap for workers and the CLI.
    if name in ("Meter", "Measurement"):
        from harness import meter

        return getattr(meter, name)
    if name == "load_results":
        from harness.store import load_results

        return load_results
    if name == "track":
        from harness.integrations import track

        return track
    if name == "run_suite":
        from harness.runner import run_suite

        return run_suite
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
