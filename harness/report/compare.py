"""Metric changes between two runs, and which of them are regressions beyond the noise.

Cases match by their readable label (``case``: model/variant/hardware/shape, or a command's name),
so a case still matches when only measurement settings changed. For each metric both runs have,
the change is *beyond noise* when the two 95% intervals do not overlap **and** the relative change
of the medians exceeds the threshold. Where either run has no interval (a single repetition), the
threshold alone decides, and the row says so. A *regression* is a change beyond noise in the worse
direction: more energy or time, fewer tokens per second, lower accuracy. A case that was ok in the
base run and failed in the new one is a regression too. Energy metrics are not judged when the two
runs obtained energy differently (measured against estimated): the row says so instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.tables import case_stats, failed_cases

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
    "beyond_noise",
    "verdict",
    "note",
]


def _one_per_case(cases: pd.DataFrame) -> pd.DataFrame:
    """One row per case label; a case with both methods keeps the measured one."""
    cases = cases.copy()
    cases["case"] = cases["case"].fillna(cases["case_id"])
    cases["_measured"] = cases["energy_method"] == "measured"
    cases = cases.sort_values("_measured", kind="stable").drop_duplicates("case", keep="last")
    return cases.drop(columns="_measured").set_index("case")


def compare_frames(base: pd.DataFrame, new: pd.DataFrame, threshold: float = 0.05) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` for every metric of every case the two runs of repetitions share."""
    base_all = _one_per_case(case_stats(base))
    n = _one_per_case(case_stats(new))
    shared = base_all.index.intersection(n.index, sort=False)
    b, n = base_all.loc[shared], n.loc[shared]
    same_method = (b["energy_method"] == n["energy_method"]).to_numpy()
    parts = []
    for metric, direction in METRICS.items():
        if metric not in b.columns:
            continue
        bm, nm = b[metric].to_numpy(float), n[metric].to_numpy(float)
        have = ~(np.isnan(bm) | np.isnan(nm))
        if not have.any():
            continue
        blo, bhi = b[f"{metric}_ci_low"].to_numpy(float), b[f"{metric}_ci_high"].to_numpy(float)
        nlo, nhi = n[f"{metric}_ci_low"].to_numpy(float), n[f"{metric}_ci_high"].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(bm != 0, (nm - bm) / np.abs(bm), np.where(nm == bm, 0.0, np.inf))
        no_ci = np.isnan(blo) | np.isnan(bhi) | np.isnan(nlo) | np.isnan(nhi)
        disjoint = no_ci | (nlo > bhi) | (nhi < blo)
        beyond = disjoint & (np.abs(rel) > threshold)
        worse = np.sign(nm - bm) == -direction
        verdict = np.where(beyond, np.where(worse, "regression", "improvement"), "within noise")
        note = np.where(no_ci, "no interval: threshold only", "")
        if metric in ENERGY_METRICS:
            verdict = np.where(same_method, verdict, "not comparable")
            beyond = beyond & same_method
            note = np.where(
                same_method,
                note,
                "energy method " + b["energy_method"] + " -> " + n["energy_method"],
            )
        frame = pd.DataFrame(
            {
                "case": shared,
                "metric": metric,
                "base": bm,
                "base_ci_low": blo,
                "base_ci_high": bhi,
                "new": nm,
                "new_ci_low": nlo,
                "new_ci_high": nhi,
                "change_rel": rel,
                "beyond_noise": beyond,
                "verdict": verdict,
                "note": note,
            }
        )
        parts.append(frame[have])
    # cases that were ok and now fail
    failed = failed_cases(new)
    failed = failed[failed["case"].fillna(failed["case_id"]).isin(set(base_all.index))]
    if len(failed):
        parts.append(
            pd.DataFrame(
                {
                    "case": failed["case"].fillna(failed["case_id"]).to_numpy(),
                    "metric": "status",
                    "beyond_noise": True,
                    "verdict": "regression",
                    "note": ("failed: " + failed["error"].fillna("").astype(str)).to_numpy(),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    order = {c: i for i, c in enumerate(dict.fromkeys(out["case"]))}
    out["_o"] = out["case"].map(order)
    return out.sort_values(["_o"], kind="stable").drop(columns="_o").reset_index(drop=True)


def has_regression(rows: pd.DataFrame) -> bool:
    return bool((rows["verdict"] == "regression").any())
