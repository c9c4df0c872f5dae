"""The forecast of a training case's total energy and time, made after its first steps.

The first ``forecast_fraction`` of the steps (10% by default; the unmeasured warmup passes before
them do not count) are split into ``BLOCKS`` blocks, each measured in its own meter window inside
the chunk windows. Each block gives a rate, joules and seconds per step. The first block pays for
one-time costs (the optimizer's state is allocated at its first step), so the rate is the mean of
the others; the forecast is what was measured so far plus the remaining steps at that rate, and its
95% interval is the t-interval of the mean rate (blocks - 2 degrees of freedom) times the remaining
steps. carbontracker forecasts a whole run from its first epoch the same way (mean epoch energy ×
epochs), without an interval; the interval here says how steady the first part was, not whether
the machine will change later (other work, heat): the benchmark checks how often it holds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from harness.stats import t975

BLOCKS = 5
DEFAULT_FRACTION = 0.1


@dataclass
class Block:
    steps: int
    energy_j: float
    duration_s: float


def forecast_steps(steps: int, fraction: float = DEFAULT_FRACTION) -> int:
    """How many steps are measured before the forecast: at least one per block when possible."""
    return min(steps, max(math.ceil(fraction * steps), min(BLOCKS, steps)))


def block_bounds(first_steps: int, blocks: int = BLOCKS) -> list[tuple[int, int]]:
    """``first_steps`` split into near-equal [start, end) step ranges (fewer when too few steps)."""
    n = max(1, min(blocks, first_steps))
    base, extra = divmod(first_steps, n)
    out, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


def _rate(values: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width of per-step rates (half-width NaN from a single block)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    half = float(t975(len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def forecast(blocks: list[Block], total_steps: int) -> dict:
    """``forecast_j`` / ``forecast_s`` with their 95% intervals, from the measured blocks."""
    seen_steps = sum(b.steps for b in blocks)
    seen_j = sum(b.energy_j for b in blocks)
    seen_s = sum(b.duration_s for b in blocks)
    rate_blocks = blocks[1:] if len(blocks) >= 3 else blocks
    remaining = max(0, total_steps - seen_steps)
    out: dict = {"forecast_after_steps": seen_steps, "forecast_blocks": len(blocks)}
    for key, seen, values in (
        ("forecast_j", seen_j, [b.energy_j / b.steps for b in rate_blocks]),
        ("forecast_s", seen_s, [b.duration_s / b.steps for b in rate_blocks]),
    ):
        mean, half = _rate(values)
        out[key] = seen + remaining * mean
        low = seen + remaining * max(0.0, mean - half) if not math.isnan(half) else math.nan
        out[f"{key}_ci_low"] = low
        out[f"{key}_ci_high"] = seen + remaining * (mean + half) if not math.isnan(half) else low
    return out
