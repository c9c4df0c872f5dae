"""Sweeps over a hardware knob, as the report reads them: each setup's latency and the knob
settings its windows recorded, for recommend and the figures against a knob (drawn in
harness/report/plots.py). Setting the knobs is harness/knobs.py.

A setup's knobs are its hardware profile's (``gpu-200w``, ``cpu-1200mhz``); the values shown are
those the windows recorded (``power_limit_w``, ``cpu_max_mhz``: what the machine reported, not what
the suite asked for). Latency is an inference case's ``latency_p90_s`` (the 90th percentile of
its generate calls) or ``ttft_s`` (time to the first token), the median over its repetitions:
for recommend the case at the batch size compared, for the figures the headline case.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.tables import SETUP, Tables
from harness.workloads import kinds

#: --latency choice -> column
LATENCY_COLUMN = {"p90": "latency_p90_s", "ttft": "ttft_s"}
LATENCY_WHAT = {"p90": "p90 latency", "ttft": "TTFT"}
KNOB_COLUMNS = ["power_limit_w", "cpu_max_mhz"]


def latency_column(latency: str) -> str:
    if latency not in LATENCY_COLUMN:
        raise HarnessError(f"--latency must be p90 or ttft, got {latency!r}")
    return LATENCY_COLUMN[latency]


def _recorded_knobs(tables: Tables) -> pd.DataFrame:
    """Per case id: the median of each knob column over its ok repetitions."""
    frame = tables.run.frame
    ok = frame[frame["status"] == "ok"]
    cols = [c for c in KNOB_COLUMNS if c in ok.columns]
    if ok.empty or not cols:
        return pd.DataFrame(columns=KNOB_COLUMNS, index=pd.Index([], name="case_id"))
    values = ok[["case_id", *cols]].copy()
    for c in cols:
        values[c] = pd.to_numeric(values[c], errors="coerce")
    return values.groupby("case_id").median().reindex(columns=KNOB_COLUMNS)


def headline_latency_and_knobs(tables: Tables) -> pd.DataFrame:
    """Per setup (index SETUP): the headline case's latency columns and recorded knobs."""
    setups = tables.setups
    if "case_id" not in setups.columns:
        return pd.DataFrame(index=setups.index, columns=[*LATENCY_COLUMN.values(), *KNOB_COLUMNS])
    cases = tables.cases.set_index(["case_id", "energy_method"])
    keys = list(zip(setups["case_id"], setups.index.get_level_values("energy_method"), strict=True))
    out = pd.DataFrame(index=setups.index)
    for col in LATENCY_COLUMN.values():
        column = cases[col] if col in cases.columns else pd.Series(dtype=float)
        out[col] = [column.get(k, np.nan) if pd.notna(k[0]) else np.nan for k in keys]
    knobs = _recorded_knobs(tables)
    for col in KNOB_COLUMNS:
        out[col] = [
            knobs[col].get(cid, np.nan) if pd.notna(cid) else np.nan for cid in setups["case_id"]
        ]
    return out


def latency_and_knobs_by_batch(tables: Tables, latency: str) -> pd.DataFrame:
    """Per setup (SETUP columns) and batch size (``batch``): the infer case's latency and, where
    any setup recorded one, the knob columns. Several prompt/new-token lengths at one batch
    size: the most new tokens, then the longest prompt (the headline rule)."""
    col = latency_column(latency)
    c = tables.cases
    infer = c[c["workload"].isin(kinds(unit="query")) & c["model"].notna()].copy()
    infer["energy_method"] = infer["energy_method"].fillna("unknown")
    order = ["batch_size", "new_tokens", "prompt_tokens"]
    infer = infer.sort_values(order, ascending=False, kind="stable")
    infer["batch"] = pd.to_numeric(infer["batch_size"], errors="coerce").astype(float)
    infer = infer.drop_duplicates([*SETUP, "batch"])
    infer = infer.join(_recorded_knobs(tables), on="case_id")
    if col not in infer.columns:
        infer[col] = np.nan
    keep = [col, *[k for k in KNOB_COLUMNS if infer[k].notna().any()]]
    return infer[[*SETUP, "batch", *keep]].reset_index(drop=True)


# ------------------------------------------------------------------------------ figures
KNOB_AXES = {
    "power_limit_w": (
        "cuda",
        "GPU power limit (W, as each window recorded it)",
        "the GPU power limit",
    ),
    "cpu_max_mhz": (
        "cpu",
        "CPU frequency cap (MHz, scaling_max_freq as recorded)",
        "the CPU frequency cap",
    ),
}


def knob_points(tables: Tables, knob: str) -> pd.DataFrame:
    """Setups of the knob's device kind with the knob recorded, where some model/variant was
    measured at two or more of its values."""
    device_kind = KNOB_AXES[knob][0]
    extra = headline_latency_and_knobs(tables)
    extra = extra[[c for c in extra.columns if c not in tables.setups.columns]]
    s = tables.setups.join(extra).reset_index()
    s = s[s["device"].astype(str).str.startswith(device_kind)]
    s = s[s[knob].notna() & (s["energy_per_token_j"] > 0)].copy()
    if s.empty:
        return s
    s["series"] = s["model"].astype(str) + "/" + s["variant"].astype(str)
    s.loc[s["energy_method"] == "estimated", "series"] += " (est.)"
    spread = s.groupby("series")[knob].nunique()
    return s[s["series"].isin(spread[spread > 1].index)]
