"""The cheapest setup that is accurate enough, and the Pareto front of accuracy against energy.

Energy is per query (default) or per generated token, at one shape for every setup
(:mod:`harness.report.shapes`): the largest batch size that every candidate measured (or
``batch_size``), so that no setup is compared at another batch size than the others. Where the
candidates share none, they are compared at the shape the most of them measured, and the others
are named as not compared (``not_at_shape``): no setup is weighed at a shape of its own.

Accuracy is that of the task asked for; with no task: the run's only task, or with several, the
mean over all of them, counting only setups evaluated on every task (a setup missing a task cannot
show that it meets the target there). A setup **meets the target when the lower bound of its 95%
interval does** (``by="lower"``, the default): a point estimate of 0.80 over 50 questions does not
show 0.75; ``by="point"`` judges the point estimate instead.

Measured and estimated energy are never on one front, nor compared for the cheapest: the
recommendation is made among the setups of one method (``method``; by default measured where any
setup is measured), and the others are listed as left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.knob_sweeps import latency_and_knobs_by_batch, latency_column
from harness.report.tables import SETUP, Tables
from harness.workloads import kinds, trait

ENERGY_COLUMN = {"query": "energy_per_query_j", "token": "energy_per_token_j"}
JUDGED_BY = ("lower", "point")
METHODS = ("measured", "estimated")


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


def pareto_by_method(energy, accuracy, method) -> np.ndarray:
    """:func:`pareto_mask` within each energy method: measured and estimated figures are not
    comparable, so one never dominates the other."""
    energy = np.asarray(energy, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    method = pd.Series(method).fillna("unknown").to_numpy()
    mask = np.zeros(len(energy), dtype=bool)
    for m in pd.unique(method):
        idx = np.flatnonzero(method == m)
        mask[idx] = pareto_mask(energy[idx], accuracy[idx])
    return mask


def setup_label(frame: pd.DataFrame) -> pd.Series:
    return (
        frame["model"].astype(str)
        + "/"
        + frame["variant"].astype(str)
        + "/"
        + frame["hardware"].astype(str)
    )


def _accuracy(setups: pd.DataFrame, tasks: list[str], task: str | None):
    """Point, lower and upper accuracy per setup, and what they are."""
    if task is not None:
        if task not in tasks:
            raise HarnessError(f"--task {task!r} is not in the run (tasks: {', '.join(tasks)})")
        chosen, what = [task], f"accuracy on {task}"
    elif len(tasks) == 1:
        chosen, what = tasks, f"accuracy on {tasks[0]}"
    else:
        chosen, what = tasks, f"mean accuracy over {', '.join(tasks)}"
    cols = [f"accuracy_{t}" for t in chosen]
    # the mean of the bounds: never narrower than the interval of the mean (see tables)
    point = setups[cols].mean(axis=1, skipna=False)
    low = setups[[f"{c}_ci_low" for c in cols]].mean(axis=1, skipna=False)
    high = setups[[f"{c}_ci_high" for c in cols]].mean(axis=1, skipna=False)
    return point, low, high, what


def _energy_at(tables: Tables, keys, shape, energy_col: str) -> pd.Series:
    """Per setup of ``keys``: the energy figure at ``shape`` (NaN where it has none there)."""
    from harness.report.shapes import Shapes

    shapes = Shapes.of(tables)
    return pd.Series([shapes.at(key, shape)[energy_col] for key in keys], dtype=float)


@dataclass
class Candidates:
    frame: pd.DataFrame
    what: str
    #: the batch size all candidates are compared at (None: no shape at all)
    batch_size: int | None
    #: setups left out because their energy was obtained by the other method
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    method: str | None = None
    #: setups with an accuracy but no energy figure to weigh (a served setup's is per request)
    unpriced: list[str] = field(default_factory=list)
    #: the shape compared at (harness.report.shapes.Shape.label)
    shape: str | None = None
    #: setups with an accuracy and energy figures, but none at ``shape``: "setup (batch 1)"
    not_at_shape: list[str] = field(default_factory=list)


def candidate_set(
    tables: Tables,
    task: str | None,
    per: str,
    *,
    by: str = "lower",
    method: str | None = None,
    batch_size: int | None = None,
) -> Candidates:
    """Setups with an accuracy and an energy figure, of one energy method, at one batch size."""
    if per not in ENERGY_COLUMN:
        raise HarnessError(f"--per must be query or token, got {per!r}")
    if by not in JUDGED_BY:
        raise HarnessError(f"--accuracy-by must be lower or point, got {by!r}")
    if method is not None and method not in METHODS:
        raise HarnessError(f"--method must be measured or estimated, got {method!r}")
    if batch_size is not None and batch_size < 1:
        raise HarnessError(f"--batch-size must be >= 1, got {batch_size}")
    tasks = tables.tasks
    if not tasks:
        raise HarnessError(f"{tables.run.path}: the run has no accuracy results to compare")
    from harness.report.shapes import Shapes

    setups = tables.setups
    point, low, high, what = _accuracy(setups, tasks, task)
    energy_col = ENERGY_COLUMN[per]
    shapes = Shapes.of(tables)
    infer = shapes.rows[shapes.rows["workload"].isin(kinds(engines="in-process"))]
    measured = set(map(tuple, infer[SETUP].to_numpy().tolist()))
    scored = [k for k, p in zip(setups.index, point, strict=True) if pd.notna(p)]
    with_figures = [k for k in scored if k in measured]
    if batch_size is not None and not any(shapes.shared([k], batch_size) for k in with_figures):
        raise HarnessError(f"--batch-size {batch_size}: no setup with an accuracy measured it")
    # the one rule of harness.report.shapes, in-process (a served setup's energy is per request)
    shape, at_shape = shapes.most_shared(with_figures, batch_size)
    if shape is not None and trait(shape.workload, "engines") == "served":
        shape, at_shape = None, []
    labels = setup_label(setups.reset_index())
    label_of = dict(zip(setups.index, labels, strict=True))
    not_at = [f"{label_of[k]} ({shapes.measured(k)})" for k in with_figures if k not in at_shape]
    unpriced = [label_of[k] for k in scored if k not in measured]
    out = pd.DataFrame(
        {
            "setup": labels.to_numpy(),
            "accuracy": point.to_numpy(),
            "accuracy_ci_low": low.to_numpy(),
            "accuracy_ci_high": high.to_numpy(),
            energy_col: _energy_at(tables, setups.index, shape, energy_col).to_numpy(),
            "shape": shape.label if shape is not None else None,
            "batch_size": shape.size if shape is not None else math.nan,
            "energy_method": setups.reset_index()["energy_method"].fillna("unknown").to_numpy(),
        }
    )
    out["judged_accuracy"] = out["accuracy_ci_low" if by == "lower" else "accuracy"]
    out = out[out["accuracy"].notna() & out[energy_col].notna()].reset_index(drop=True)
    methods = set(out["energy_method"])
    if method is None:
        method = "measured" if "measured" in methods else (sorted(methods)[0] if methods else None)
    left_out = out[out["energy_method"] != method].reset_index(drop=True)
    out = out[out["energy_method"] == method].reset_index(drop=True)
    out["on_front"] = pareto_mask(out[energy_col].to_numpy(), out["accuracy"].to_numpy())
    size = shape.size if shape is not None else None
    label = shape.label if shape is not None else None
    return Candidates(out, what, size, left_out, method, unpriced, label, not_at)


def candidates(tables: Tables, task: str | None, per: str, **options) -> tuple[pd.DataFrame, str]:
    """The candidate frame (with ``on_front``) and a description of the accuracy used."""
    c = candidate_set(tables, task, per, **options)
    return c.frame, c.what


@dataclass
class Recommendation:
    what: str
    per: str
    energy_column: str
    min_accuracy: float
    candidates: pd.DataFrame
    chosen: pd.Series | None
    most_accurate: pd.Series | None
    by: str = "lower"
    batch_size: int | None = None
    method: str | None = None
    left_out: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the latency target (s) and its column, when one was given (--max-latency)
    max_latency: float | None = None
    latency_column: str | None = None
    #: setups with an accuracy but no energy figure to weigh (Candidates.unpriced)
    unpriced: list[str] = field(default_factory=list)
    #: the shape every candidate is compared at, and the setups with no figure there
    shape: str | None = None
    not_at_shape: list[str] = field(default_factory=list)

    @property
    def front(self) -> pd.DataFrame:
        front = self.candidates[self.candidates["on_front"]].drop(
            columns=["on_front", "judged_accuracy"]
        )
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
        """Never: candidates are of one method (those of the other are in ``left_out``)."""
        return self.candidates["energy_method"].nunique() > 1


def _with_latency_and_knobs(cands: pd.DataFrame, tables: Tables, latency: str) -> pd.DataFrame:
    """The candidates with the latency of the infer case each is compared at (its batch size)
    and the knobs its windows recorded (harness/report/knob_sweeps.py)."""
    extra = latency_and_knobs_by_batch(tables, latency)
    extra["setup"] = setup_label(extra)
    added = [c for c in extra.columns if c not in (*SETUP, "batch", "setup")]
    extra = extra[["setup", "energy_method", "batch", *added]]
    cands = cands.drop(columns=[c for c in added if c in cands.columns])
    cands = cands.assign(batch=pd.to_numeric(cands["batch_size"], errors="coerce").astype(float))
    return cands.merge(extra, on=["setup", "energy_method", "batch"], how="left").drop(
        columns="batch"
    )


def recommend(
    tables: Tables,
    min_accuracy: float,
    task: str | None = None,
    per: str = "query",
    *,
    by: str = "lower",
    method: str | None = None,
    batch_size: int | None = None,
    max_latency: float | None = None,
    latency: str = "p90",
) -> Recommendation:
    """The least-energy setup whose accuracy (its lower bound, or with ``by="point"`` its point
    estimate) is at least ``min_accuracy``, and whose latency at the batch size compared is at
    most ``max_latency`` seconds when given (``latency``: p90 or ttft; harness/report/knob_sweeps.py).

    ``chosen`` is None when no setup meets the target. The most accurate setup (ties: the cheaper)
    is the reference for the saving. Setups differ by hardware profile, so knobs (a power limit, a
    frequency cap) are compared as any other part of a setup.
    """
    c = candidate_set(tables, task, per, by=by, method=method, batch_size=batch_size)
    cands = _with_latency_and_knobs(c.frame, tables, latency)
    latency_col = latency_column(latency)
    energy_col = ENERGY_COLUMN[per]
    ok = cands[cands["judged_accuracy"] >= min_accuracy]
    if max_latency is not None:
        ok = ok[ok[latency_col] <= max_latency]
    chosen = None
    if len(ok):
        chosen = ok.sort_values(
            [energy_col, "judged_accuracy"], ascending=[True, False], kind="stable"
        ).iloc[0]
    most = None
    if len(cands):
        most = cands.sort_values(
            ["accuracy", energy_col], ascending=[False, True], kind="stable"
        ).iloc[0]
    return Recommendation(
        c.what,
        per,
        energy_col,
        min_accuracy,
        cands,
        chosen,
        most,
        by=by,
        batch_size=c.batch_size,
        method=c.method,
        left_out=c.left_out,
        max_latency=max_latency,
        latency_column=latency_col,
        unpriced=c.unpriced,
        shape=c.shape,
        not_at_shape=c.not_at_shape,
    )
