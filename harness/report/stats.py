"""The report's statistics: ``harness.stats``, which lives below the workloads and the worker that
use it too (one implementation of the interval for result.json, summary.csv and forecasts)."""

from __future__ import annotations

from harness.stats import Z95, aggregate, describe, samples_from_stderr, t975, wilson

__all__ = ["Z95", "aggregate", "describe", "samples_from_stderr", "t975", "wilson"]
