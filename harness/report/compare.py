"""Metric changes between two runs, and which of them are regressions beyond the noise.

Cases match by their readable label (``case``: model/variant/hardware/shape, or a command's name),
so a case still matches when only measurement settings changed. For each metric both runs have,
a change is *beyond noise* when a test on the repetitions says it is real (p < 0.05, two-sided)
**and** the relative change of the medians exceeds the threshold:

- time, energy and throughput: **Welch's t-test** on the two runs' repetitions (unequal variances,
  Welch–Satterthwaite degrees of freedom, rounded down: conservative). Overlap of two 95% intervals
  is not a test: two intervals can overlap while the difference is significant at 1%;
- accuracy: the **two-proportion z-test** over the task's samples (repeating a deterministic
  evaluation gives no spread to test on).

Where a run has a single repetition there is nothing to test: the threshold alone decides, and the
row says so. A *regression* is a change beyond noise in the worse direction: more energy or time,
fewer tokens per second, lower accuracy. A case that was ok in the base run and failed in the new
one is a regression too; a case missing from the new run is listed as ``missing``.

A figure is only compared with one obtained the same way: energy metrics are ``not comparable``
when the energy method (measured, estimated) or the sources changed (a run that lost its GPU
sensor counts less energy, which is no improvement), and every speed and energy metric is
``not comparable`` when the device changed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.report.stats import Z95
from harness.report.tables import case_stats, failed_cases
from harness.stopping import _t_two_sided_mass

#: metric -> +1 when higher is better, -1 when lower is better
METRICS = {
    "energy_per_token_j": -1,
    "energy_per_query_j": -1,
    "energy_j": -1,
    "tokens_per_s": +1,
    "duration_s": -1,
    "ttft_s": -1,
    "tpot_s": -1,
    "accuracy": +1,
}
ENERGY_METRICS = {"energy_per_token_j", "energy_per_query_j", "energy_j"}
#: significance level of the tests
ALPHA = 0.05

COLUMNS = [
    "case",
    "metric",
    "base",
    "base_ci_low",
    "base_ci_high",
    "new",
    "new_ci_low",
    "new_ci_high",
    "change_rel",
    "p_value",
    "beyond_noise",
    "verdict",
    "note",
]


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test between samples ``a`` and ``b`` (NaN below n = 2)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = b.mean() - a.mean()
    if va + vb == 0:
        return 1.0 if diff == 0 else 0.0  # no spread at all: any difference is real
    t = abs(diff) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return max(0.0, 1.0 - _t_two_sided_mass(t, max(1, int(math.floor(df)))))


def proportion_p(p1: float, n1: float, p2: float, n2: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (NaN without sample counts)."""
    if not all(np.isfinite([p1, n1, p2, n2])) or n1 < 1 or n2 < 1:
        return math.nan
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if p1 == p2 else 0.0
    z = abs(p2 - p1) / se
    return math.erfc(z / math.sqrt(2))


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["case"] = frame["case"].fillna(frame["case_id"])
    frame["energy_method"] = frame["energy_method"].fillna("unknown")
    return frame


def _one_per_case(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per case label; a case with both methods keeps the measured one."""
    cases = _labelled(cases)
    cases["_measured"] = cases["energy_method"] == "measured"
    cases = cases.sort_values("_measured", kind="stable").drop_duplicates("case", keep="last")
    return cases.drop(columns="_measured").set_index("case")


def _repetitions(frame: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The ok repetitions of each case label, of the energy method ``chosen`` kept for it."""
    ok = _labelled(frame[frame["status"] == "ok"])
    methods = chosen["energy_method"].to_dict()
    ok = ok[ok["energy_method"] == ok["case"].map(methods)]
    return {case: rows for case, rows in ok.groupby("case", sort=False)}


def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _changed(b: dict, n: dict, column: str) -> str | None:
    old, new = _text(b.get(column)), _text(n.get(column))
    if old == new:
        return None
    return f"{column.replace('_', ' ')} {old or '?'} -> {new or '?'}"


def _samples(reps: pd.DataFrame) -> float:
    for col in ("samples",):
        if col in reps.columns and reps[col].notna().any():
            return float(reps[col].median())
    return math.nan


def compare_frames(base: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` for every metric of every case the two runs of repetitions share,
    then the cases that now fail and those missing from the new run."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, not {threshold!r}")
    base_all = _one_per_case(case_stats(base))
    new_all = _one_per_case(case_stats(new))
    shared = base_all.index.intersection(new_all.index, sort=False)
    b, n = base_all.loc[shared], new_all.loc[shared]
    base_reps, new_reps = _repetitions(base, b), _repetitions(new, n)
    rows: list[dict] = []
    b_rows, n_rows = b.to_dict("index"), n.to_dict("index")  # plain dicts: fast per case
    for case in shared:
        bc, nc = b_rows[case], n_rows[case]
        method_change = _changed(bc, nc, "energy_method") or _changed(bc, nc, "energy_sources")
        device_change = _changed(bc, nc, "device") or _changed(bc, nc, "device_name")
        br, nr = base_reps.get(case), new_reps.get(case)
        for metric, direction in METRICS.items():
            if metric not in b.columns:
                continue
            bm, nm = float(bc[metric]), float(nc[metric])
            if math.isnan(bm) or math.isnan(nm):
                continue
            if bm != 0:
                rel = (nm - bm) / abs(bm)
            else:
                rel = 0.0 if nm == bm else math.inf
            if metric == "accuracy":
                p = proportion_p(bm, _samples(br), nm, _samples(nr))
                what = "no sample counts"
            else:
                p = welch_p(br[metric].to_numpy(float), nr[metric].to_numpy(float))
                what = "fewer than 2 repetitions"
            note = ""
            if math.isnan(p):
                beyond = abs(rel) > threshold
                note = f"{what}: threshold only"
            else:
                beyond = p < ALPHA and abs(rel) > threshold
            worse = np.sign(nm - bm) == -direction
            verdict = ("regression" if worse else "improvement") if beyond else "within noise"
            unlike = device_change if metric != "accuracy" else None
            if metric in ENERGY_METRICS and method_change:
                unlike = method_change
            if unlike:
                verdict, beyond, note = "not comparable", False, unlike
            rows.append(
                {
                    "case": case,
                    "metric": metric,
                    "base": bm,
                    "base_ci_low": float(bc[f"{metric}_ci_low"]),
                    "base_ci_high": float(bc[f"{metric}_ci_high"]),
                    "new": nm,
                    "new_ci_low": float(nc[f"{metric}_ci_low"]),
                    "new_ci_high": float(nc[f"{metric}_ci_high"]),
                    "change_rel": rel,
                    "p_value": p,
                    "beyond_noise": bool(beyond),
                    "verdict": verdict,
                    "note": note,
                }
            )
    # cases that were ok and now fail
    failed = failed_cases(new)
    failed_labels = failed["case"].fillna(failed["case_id"])
    failed = failed[failed_labels.isin(set(base_all.index)) & ~failed_labels.isin(set(shared))]
    for _, f in failed.iterrows():
        rows.append(
            {
                "case": f["case"] if pd.notna(f["case"]) else f["case_id"],
                "metric": "status",
                "beyond_noise": True,
                "verdict": "regression",
                "note": f"failed: {_text(f['error'])}",
            }
        )
    # cases the base run measured that the new run does not have at all
    new_labels = set(new_all.index) | set(failed_labels)
    for case in base_all.index:
        if case not in new_labels:
            rows.append(
                {
                    "case": case,
                    "metric": "status",
                    "beyond_noise": False,
                    "verdict": "missing",
                    "note": "in the base run, not in the new run",
                }
            )
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    order = {c: i for i, c in enumerate(dict.fromkeys(out["case"]))}
    out["_o"] = out["case"].map(order)
    return out.sort_values(["_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def has_regression(rows: pd.DataFrame) -> bool:
    return bool((rows["verdict"] == "regression").any())


__all__ = [
    "COLUMNS",
    "METRICS",
    "Z95",
    "compare_frames",
    "has_regression",
    "proportion_p",
    "welch_p",
]
