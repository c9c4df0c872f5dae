"""Per-case statistics over repetitions: median, 95% confidence interval, n, coefficient of variation.

Below the workloads (a training forecast uses ``t975``) and the worker (result.json's aggregates
use ``describe``), so neither imports the report; ``harness.report.stats`` re-exports it all.

The central figure is the **median** of the repetitions (robust to one slow or noisy repetition).
The 95% confidence interval is the **Student t-interval on the mean**,
``mean ± t(0.975, n−1) · s / √n`` with the sample standard deviation ``s`` (ddof=1). Why this one:

- it is defined from n = 2 on (the runner's ``min_repeats`` is often 3; an order-statistic interval
  for the median needs n ≥ 6 to reach 95%),
- it is what the runner's stopping rule targets (the half-width relative to the median),
- it is deterministic and vectorises over thousands of cases (a bootstrap does neither cheaply).

For repetition noise, which is close to symmetric, mean and median nearly coincide; for skewed
data the interval describes the mean and may not contain the median. A lower bound below zero
is clipped to zero for quantities that cannot be negative. With n = 1 there is no interval (NaN).

**Accuracy** is a proportion of the task's samples answered right, and repeating the evaluation
does not sample new questions, so its interval is not one over repetitions: it is **Wilson's score
interval** for a proportion p over the n samples evaluated (``samples``; else n recovered from the
evaluator's standard error, ``se² = p(1−p)/(n−1)``). Wilson's and not Wald's ``p ± 1.96·se``: Wald's
can pass 1 (or 0), and it has zero width at p = 0 or 1, as if a perfect score on 20 questions were
certain; Wilson's stays inside [0, 1] and keeps its coverage for small n and extreme p.

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


def wilson(p, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's score interval of a proportion ``p`` over ``n`` trials (arrays; NaN where n < 1).

    ``(p + z²/2n ± z·sqrt(p(1−p)/n + z²/4n²)) / (1 + z²/n)``: always inside [0, 1].
    """
    p = np.clip(np.asarray(p, dtype=float), 0.0, 1.0)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.where(n >= 1, n, np.nan)
        z2n = z * z / n
        center = (p + z2n / 2) / (1 + z2n)
        half = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)


def samples_from_stderr(p, stderr) -> np.ndarray:
    """n from an evaluator's standard error of a proportion, ``se² = p(1−p)/(n−1)`` (lm-eval's
    sample standard error); NaN where it cannot tell (se = 0 at p = 0 or 1)."""
    p = np.asarray(p, dtype=float)
    se = np.asarray(stderr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = p * (1 - p) / (se * se) + 1
    return np.where(np.isfinite(n) & (se > 0), np.round(n), np.nan)


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
    An ``accuracy`` metric gets Wilson's interval over its samples (``samples``, else n from
    ``accuracy_stderr``) where those are known. Lower bounds are clipped at 0 except for the
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
        if m == "accuracy":
            n_samples = pd.Series(np.nan, index=median.index)
            if "samples" in frame.columns:
                n_samples = grouped["samples"].median()
            if "accuracy_stderr" in frame.columns:
                derived = samples_from_stderr(median[m], grouped["accuracy_stderr"].median())
                n_samples = n_samples.where(n_samples.notna(), derived)
            w_low, w_high = wilson(median[m].to_numpy(), n_samples.to_numpy())
            known = n_samples.notna() & median[m].notna()
            low = low.where(~known, pd.Series(w_low, index=median.index))
            high = high.where(~known, pd.Series(w_high, index=median.index))
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
