"""The report-time columns of measurements.parquet/.csv: ``produce_j``, ``embodied_g`` and
``co2e_total_g``.

They need the whole run (the machine's embodied emissions, the cases that made each setup), so
the runner's rows leave them out; building the report computes them here, once, for its own
tables and for the files (``store.rebuild_measurements`` writes them, atomically), so a notebook
reading the run (``harness.load_results``) gets the same figures as the report.
"""

from __future__ import annotations

import pandas as pd

from harness import store
from harness.carbon.boundary import Accounting, embodied_columns
from harness.report.tables import SETUP


def produce_by_row(frame: pd.DataFrame, produced: pd.DataFrame) -> pd.Series:
    """Each ok row's ``produce_j``: its own where its record has one (a served model's export),
    else its setup's (``produced``: index SETUP, the techniques' ``produce_j``)."""
    if "produce_j" in frame:
        own = pd.to_numeric(frame["produce_j"], errors="coerce").astype(float)
    else:
        own = pd.Series(float("nan"), index=frame.index)
    if produced.empty or "produce_j" not in produced:
        return own
    keys = frame[SETUP].copy()
    keys["energy_method"] = keys["energy_method"].fillna("unknown")
    index = pd.MultiIndex.from_frame(keys)
    by_setup = produced["produce_j"].reindex(index).to_numpy()
    setup_j = pd.Series(by_setup, index=frame.index, dtype=float)
    ok = frame["status"].fillna(store.OK) == store.OK
    return own.where(own.notna(), setup_j.where(ok))


def report_columns(
    frame: pd.DataFrame, accounting: Accounting | None, produced: pd.DataFrame
) -> pd.DataFrame:
    """``produce_j``, ``embodied_g``, ``co2e_total_g`` (and ``warnings`` with the embodied
    figure's doubt) of every row of ``frame``, on its index."""
    out = pd.DataFrame(index=frame.index)
    if accounting is not None:
        out = embodied_columns(frame, accounting)
    out["produce_j"] = produce_by_row(frame, produced)
    return out


def write(tables, produced: pd.DataFrame) -> pd.DataFrame:
    """Rewrite the run's measurements.parquet/.csv with the report-time columns filled."""
    return store.rebuild_measurements(
        tables.run.path, fill=lambda df: report_columns(df, tables.accounting, produced)
    )
