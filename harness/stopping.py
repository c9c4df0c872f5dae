"""When to stop repeating a case (ARCHITECTURE.md, Measurement rules).

Repeat until at least ``min_repeats`` repetitions and ``min_duration_s`` of measured time, and the
95% confidence half-width (Student t) of the energy is within ``target_rel_ci`` of its median; or
until ``max_repeats``. A constant reading converges no earlier than ``min_repeats`` (its zero
width proves only that the sensor repeated itself), and zero joules never does. The reason is recorded with the case: ``converged`` or ``max_repeats`` (or
``planned`` when the workload fixes its own count, or ``time_budget`` when one more repetition
would likely pass the case's timeout). ``repeat`` is the loop that applies the rule.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

CONVERGED = "converged"
MAX_REPEATS = "max_repeats"
PLANNED = "planned"
TIME_BUDGET = "time_budget"
#: a repetition is not started when the case would then likely pass this share of its timeout
TIME_BUDGET_SHARE = 0.85


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4, exact)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        term, acc = math.cos(theta), 0.0
        if df > 1:
            acc = term
            for k in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * k) / (2 * k + 1)
                acc += term
        return 2 / math.pi * (theta + s * acc)
    term, acc = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        acc += term
    return s * acc


@lru_cache(maxsize=256)
def t_quantile(df: int, confidence: float = 0.95) -> float:
    """The two-sided Student t critical value: P(|T| <= t) = ``confidence``."""
    if df < 1:
        raise ValueError("df must be >= 1")
    df = min(df, 1000)  # beyond this t equals the normal quantile to 4 digits
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ci_half_width(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the Student t confidence interval of the mean (inf below two values)."""
    n = len(values)
    if n < 2:
        return math.inf
    return t_quantile(n - 1, confidence) * statistics.stdev(values) / math.sqrt(n)


def stop_reason(
    energies_j: Sequence[float],
    durations_s: Sequence[float],
    *,
    min_repeats: int,
    max_repeats: int,
    min_duration_s: float,
    target_rel_ci: float,
) -> str | None:
    """``converged``, ``max_repeats``, or None to go on repeating."""
    n = len(energies_j)
    if n >= min_repeats and sum(durations_s) >= min_duration_s:
        values = [float(e) for e in energies_j if e is not None and math.isfinite(float(e))]
        if len(values) == n and n >= 2:
            half = ci_half_width(values)
            median = abs(statistics.median(values))
            # a sensor that read nothing (0 J every time) is constant, not converged
            if median > 0 and half <= target_rel_ci * median:
                return CONVERGED
    if n >= max_repeats:
        return MAX_REPEATS
    return None


def repeat(
    run_one: Callable[[int], dict],
    records: list[dict],
    settings: Any,
    *,
    planned: int | None = None,
    started: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run repetitions until the rule says stop; the reason.

    ``run_one(i)`` measures repetition ``i`` and returns its record (``energy_j``,
    ``duration_s``), which is appended to ``records`` as it comes (a later failure keeps it).
    ``settings`` is the suite's measurement block (``harness.settings.MeasurementSettings``): its
    ``min_repeats``, ``max_repeats``, ``min_duration_s``, ``target_rel_ci``, ``cooldown_s`` and
    ``case_timeout_s``. ``planned``: the workload's own count, which replaces the rule.
    ``started``: when the case started on ``clock`` (its timeout counts from there).
    """
    started = clock() if started is None else started
    timeout_s = settings.case_timeout_s
    while True:
        i = len(records)
        if i and settings.cooldown_s:
            sleep(settings.cooldown_s)  # let the machine cool between repetitions
        records.append(run_one(i))
        if planned:
            if len(records) >= planned:
                return PLANNED
            continue
        reason = stop_reason(
            [r["energy_j"] for r in records],
            [r["duration_s"] for r in records],
            min_repeats=settings.min_repeats,
            max_repeats=settings.max_repeats,
            min_duration_s=settings.min_duration_s,
            target_rel_ci=settings.target_rel_ci,
        )
        if reason is not None:
            return reason
        elapsed = clock() - started
        per_rep = elapsed / len(records)
        if len(records) >= settings.min_repeats and (
            elapsed + per_rep > TIME_BUDGET_SHARE * timeout_s
        ):
            return TIME_BUDGET  # stop with what is measured rather than lose it all
