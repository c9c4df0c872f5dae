"""The forecast of a training case's total energy and time, made after its first steps.

The first ``forecast_fraction`` of the steps (10% by default; the unmeasured warmup passes before
them do not count) are split into ``BLOCKS`` blocks, each measured in its own meter window inside
the chunk windows. Each block gives a rate, joules and seconds per step. The first block pays for
one-time costs (the optimizer's state is allocated at its first step), so the rate is the mean of
the others; the forecast is what was measured so far plus the remaining steps at that rate.
carbontracker forecasts a whole run from its first epoch the same way (mean epoch energy × epochs),
without an interval.

The 95% interval is a *prediction* interval of the total, not a confidence interval of the early
mean rate (that one covered 80% of actual totals, not 95%: it says how well the first part's mean
is known, not where the rest will land). Over the ``R`` remaining steps the mean rate differs from
the measured mean ``m`` of ``k`` rate blocks (``b`` steps each on average, spread ``s``) by

- the error of ``m`` itself and the remaining steps' own spread: ``t(k-1) × s × sqrt(1/k + b/R)``;
- the drift across the measured blocks (least-squares slope × the steps they span), which a
  machine whose load or heat changes keeps up, or gives back, over the rest: added in full.

So ``total = seen + R × (m ± half)``. The benchmark (benchmarks/forecast_error.py) checks how often
the actual total falls inside.
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


def drift(mid_steps: list[float], rates: list[float]) -> float:
    """How much the per-step rate moved across the blocks: |least-squares slope| × steps spanned
    (0 from fewer than 2 blocks)."""
    if len(rates) < 2:
        return 0.0
    mx, mr = statistics.fmean(mid_steps), statistics.fmean(rates)
    sxx = sum((x - mx) ** 2 for x in mid_steps)
    if sxx == 0:
        return 0.0
    slope = sum((x - mx) * (r - mr) for x, r in zip(mid_steps, rates, strict=True)) / sxx
    return abs(slope) * (max(mid_steps) - min(mid_steps))


def rate_half_width(
    rates: list[float], mid_steps: list[float], block_steps: float, remaining: int
) -> float:
    """95% half-width of the mean rate over the ``remaining`` steps (NaN from a single block)."""
    k = len(rates)
    if k < 2:
        return math.nan
    if remaining <= 0:
        return 0.0
    spread = (
        float(t975(k - 1)) * statistics.stdev(rates) * math.sqrt(1 / k + block_steps / remaining)
    )
    return spread + drift(mid_steps, rates)


def forecast(blocks: list[Block], total_steps: int) -> dict:
    """``forecast_j`` / ``forecast_s`` with their 95% prediction intervals, from the measured
    blocks."""
    seen_steps = sum(b.steps for b in blocks)
    seen_j = sum(b.energy_j for b in blocks)
    seen_s = sum(b.duration_s for b in blocks)
    first = 1 if len(blocks) >= 3 else 0
    rate_blocks = blocks[first:]
    starts = [sum(b.steps for b in blocks[:i]) for i in range(len(blocks))][first:]
    mids = [s + b.steps / 2 for s, b in zip(starts, rate_blocks, strict=True)]
    block_steps = statistics.fmean(b.steps for b in rate_blocks)
    remaining = max(0, total_steps - seen_steps)
    out: dict = {"forecast_after_steps": seen_steps, "forecast_blocks": len(blocks)}
    for key, seen, values in (
        ("forecast_j", seen_j, [b.energy_j / b.steps for b in rate_blocks]),
        ("forecast_s", seen_s, [b.duration_s / b.steps for b in rate_blocks]),
    ):
        mean = statistics.fmean(values)
        half = rate_half_width(values, mids, block_steps, remaining)
        out[key] = seen + remaining * mean
        if math.isnan(half):
            out[f"{key}_ci_low"] = out[f"{key}_ci_high"] = math.nan
            continue
        out[f"{key}_ci_low"] = seen + remaining * max(0.0, mean - half)
        out[f"{key}_ci_high"] = seen + remaining * (mean + half)
    return out
