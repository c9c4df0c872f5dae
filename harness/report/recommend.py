"""The cheapest setup that is accurate enough, and the Pareto front of accuracy against energy.

Energy is per query (default) or per generated token, at each setup's headline inference shape
(its largest batch size). Accuracy is that of the task asked for; with no task: the run's only
task, or with several, the mean over all of them, counting only setups evaluated on every task
(a setup missing a task cannot show that it meets the target there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.tables import Tables

ENERGY_COLUMN = {"query": "energy_per_query_j", "token": "energy_per_token_j"}


def pareto_mask(energy: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """True where no other point has less or equal energy and higher or equal accuracy
    (one strictly). Of exact duplicates one is kept. NaNs are never on the front.
    """
    energy = np.asarray(energy, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    valid = ~(np.isnan(energy) | np.isnan(accuracy))
    mask = np.zeros(len(energy), dtype=bool)
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return mask
    # cheapest first; at equal energy the most accurate first
    order = idx[np.lexsort((-accuracy[idx], energy[idx]))]
    best = -math.inf
    for i in order:
        if accuracy[i] > best:
            mask[i] = True
            best = accuracy[i]
    return mask


def setup_label(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["model"].astype(str)
        + "/"
        + frame["variant"].astype(str)
        + "/"
        + frame["hardware"].astype(str)
    )


def candidates(tables: Tables, task: str | None, per: str) -> tuple[pd.DataFrame, str]:
    """Setups with an accuracy and an energy figure: setup, accuracy, energy, shape, method.

    Returns the frame (with ``on_front``) and a description of the accuracy used.
    """
    if per not in ENERGY_COLUMN:
        raise HarnessError(f"--per must be query or token, got {per!r}")
    tasks = tables.tasks
    if not tasks:
        raise HarnessError(f"{tables.run.path}: the run has no accuracy results to compare")
    setups = tables.setups.reset_index()
    if task is not None:
        if task not in tasks:
            raise HarnessError(f"--task {task!r} is not in the run (tasks: {', '.join(tasks)})")
        accuracy = setups[f"accuracy_{task}"]
        what = f"accuracy on {task}"
    elif len(tasks) == 1:
        accuracy = setups[f"accuracy_{tasks[0]}"]
        what = f"accuracy on {tasks[0]}"
    else:
        cols = [f"accuracy_{t}" for t in tasks]
        accuracy = setups[cols].mean(axis=1, skipna=False)
        what = f"mean accuracy over {', '.join(tasks)}"
    energy_col = ENERGY_COLUMN[per]
    out = pd.DataFrame(
        {
            "setup": setup_label(setups),
            "accuracy": accuracy,
            energy_col: setups[energy_col],
            "batch_size": setups["headline_batch_size"],
            "energy_method": setups["energy_method"],
        }
    )
    out = out[out["accuracy"].notna() & out[energy_col].notna()].reset_index(drop=True)
    out["on_front"] = pareto_mask(out[energy_col].to_numpy(), out["accuracy"].to_numpy())
    return out, what


@dataclass
class Recommendation:
    what: str
    per: str
    energy_column: str
    min_accuracy: float
    candidates: pd.DataFrame
    chosen: pd.Series | None
    most_accurate: pd.Series | None
    #: the latency target (s) and its column, when one was given (--max-latency)
    max_latency: float | None = None
    latency_column: str | None = None

    @property
    def front(self) -> pd.DataFrame:
        front = self.candidates[self.candidates["on_front"]].drop(columns="on_front")
        return front.sort_values(self.energy_column).reset_index(drop=True)

    @property
    def best_accuracy(self) -> float:
        return float(self.candidates["accuracy"].max()) if len(self.candidates) else math.nan

    @property
    def saved_j(self) -> float:
        """Energy saved per query (or token) against the most accurate setup."""
        if self.chosen is None or self.most_accurate is None:
            return math.nan
        return float(self.most_accurate[self.energy_column] - self.chosen[self.energy_column])

    @property
    def saved_pct(self) -> float:
        base = (
            float(self.most_accurate[self.energy_column]) if self.most_accurate is not None else 0
        )
        return 100.0 * self.saved_j / base if base else math.nan

    @property
    def mixes_methods(self) -> bool:
        return self.candidates["energy_method"].nunique() > 1


def recommend(
    tables: Tables,
    min_accuracy: float,
    task: str | None = None,
    per: str = "query",
    max_latency: float | None = None,
    latency: str = "p90",
):
    """The least-energy setup whose accuracy is at least ``min_accuracy`` (and whose headline
    latency is at most ``max_latency`` seconds, when given; see harness/report/knobs.py).

    ``chosen`` is None when no setup meets the target. The most accurate setup (ties: the cheaper)
    is the reference for the saving. Setups differ by hardware profile, so knobs (a power limit, a
    frequency cap) are compared as any other part of a setup.
    """
    from harness.report.knobs import latency_column, with_latency_and_knobs

    cands, what = candidates(tables, task, per)
    energy_col = ENERGY_COLUMN[per]
    latency_col = latency_column(latency)
    cands = with_latency_and_knobs(cands, tables, latency)
    ok = cands[cands["accuracy"] >= min_accuracy]
    if max_latency is not None:
        ok = ok[ok[latency_col] <= max_latency]
    chosen = None
    if len(ok):
        chosen = ok.sort_values(
            [energy_col, "accuracy"], ascending=[True, False], kind="stable"
        ).iloc[0]
    most = None
    if len(cands):
        most = cands.sort_values(
            ["accuracy", energy_col], ascending=[False, True], kind="stable"
        ).iloc[0]
    return Recommendation(
        what, per, energy_col, min_accuracy, cands, chosen, most, max_latency, latency_col
    )
