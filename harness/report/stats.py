"""Per-case statistics over repetitions: median, 95% confidence interval, n, coefficient of variation.

The central figure is the **median** of the repetitions (robust to one slow or noisy repetition).
The 95% confidence interval is the **Student t-interval on the mean**,
``mean ± t(0.975, n−1) · s / √n`` with the sample standard deviation ``s`` (ddof=1). Why this one:

- it is defined from n = 2 on (the runner's ``min_repeats`` is often 3; an order-statistic interval
  for the median needs n ≥ 6 to reach 95%),
- it is what the runner's stopping rule targets (the half-width relative to the median),
- it is deterministic and vectorises over thousands of cases (a bootstrap does neither cheaply).

For repetition noise, which is close to symmetric, mean and median nearly coincide; for skewed
data the interval describes the mean and may not contain the median. A lower bound below zero
is clipped to zero for quantities that cannot be negative. With n = 1 there is no
interval (NaN), except for accuracy, whose evaluator reports a standard error over the samples of
one pass: then the interval is ``accuracy ± 1.96 · stderr`` (normal approximation).

The coefficient of variation is ``s / mean`` (NaN for n < 2 or a zero mean).

Energy figures obtained by different methods (measured, estimated) are never pooled: callers group
by ``energy_method`` as part of the key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.stopping import ci_half_width, t_quantile

#: two-sided 95% normal quantile, for intervals from a reported standard error
Z95 = 1.959963984540054


def t975(df: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """The 0.975 quantile of Student's t for each degrees-of-freedom value (NaN for df < 1).

    Each distinct df is computed once by the runner's own ``harness.stopping.t_quantile``, so
    the report and the stopping rule use the same interval.
    """
    df = np.asarray(df, dtype=float)
    out = np.full(df.shape, np.nan)
    valid = np.isfinite(df) & (df >= 1)
    if valid.any():
        uniq, inverse = np.unique(df[valid].astype(int), return_inverse=True)
        out[valid] = np.array([t_quantile(int(v)) for v in uniq])[inverse]
    return out


def describe(values: Iterable[float]) -> dict[str, float]:
    """Median, mean, 95% t-interval, n and coefficient of variation of one sample (NaNs dropped)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        nan = math.nan
        return {"median": nan, "mean": nan, "ci_low": nan, "ci_high": nan, "n": 0, "cv": nan}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = ci_half_width(x.tolist()) if n > 1 else math.nan  # the stopping rule's own
    return {
        "median": float(np.median(x)),
        "mean": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": n,
        "cv": sd / mean if n > 1 and mean != 0 else math.nan,
    }


def aggregate(
    frame: pd.DataFrame,
    keys: list[str],
    metrics: list[str],
    *,
    with_cv: bool = True,
    signed: tuple[str, ...] = ("energy_dynamic_j",),
) -> pd.DataFrame:
    """Vectorised :func:`describe` of every metric per group of ``keys``.

    Returns one row per group, indexed by ``keys``, with for each metric ``m`` the columns ``m``
    (median), ``m_ci_low``, ``m_ci_high`` and ``m_cv``, plus ``n`` (repetitions in the group).
    An ``accuracy`` metric with a single value and an ``accuracy_stderr`` column gets
    ``accuracy ± 1.96 · stderr`` as its interval. Lower bounds are clipped at 0 except for the
    ``signed`` metrics (energy less idle can be negative; a time or an energy cannot).
    """
    metrics = [m for m in metrics if m in frame.columns]
    grouped = frame.groupby(keys, sort=False, dropna=False)
    values = grouped[metrics]
    median = values.median()
    mean = values.mean()
    sd = values.std(ddof=1)
    count = values.count()
    half = pd.DataFrame(
        t975(count.to_numpy() - 1) * sd.to_numpy() / np.sqrt(count.to_numpy()),
        index=count.index,
        columns=metrics,
    )
    parts: dict[str, pd.Series] = {}
    for m in metrics:
        low, high = mean[m] - half[m], mean[m] + half[m]
        if m == "accuracy" and "accuracy_stderr" in frame.columns:
            se = grouped["accuracy_stderr"].median()
            one = count[m] == 1
            low = low.where(~one, median[m] - Z95 * se)
            high = high.where(~one, median[m] + Z95 * se)
        if m not in signed:
            low = low.clip(lower=0)
        parts[m] = median[m]
        parts[f"{m}_ci_low"] = low
        parts[f"{m}_ci_high"] = high
        if with_cv:
            with np.errstate(divide="ignore", invalid="ignore"):
                cv = sd[m] / mean[m]
            parts[f"{m}_cv"] = cv.where(np.isfinite(cv))
    out = pd.DataFrame(parts, index=median.index)
    out["n"] = grouped.size()
    return out
