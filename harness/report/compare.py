"""Metric changes between two runs, and which of them are regressions beyond the noise.

Cases match by their readable label (``case``: model/variant/hardware/shape, or a command's name),
so a case still matches when only measurement settings changed.

**Figures that mean the same in both runs.** A repetition's work is sized per run (a timed warm-up
picks how many training steps a chunk holds, how many calls an inference window batches), so
nothing is compared per repetition: inference per query and per token, serving per request and per
token, training per step and per whole training case, accuracy per sample, a command per run of
its program (the program is the unit of work).

**Three kinds of noise, each measured.**

- Inside a run, between repetitions: **Welch's t-test** on the two runs' per-unit values (unequal
  variances, degrees of freedom rounded down: conservative).
- From one run to the next, by the machine: every case measures a **reference loop** whose work
  never changes (:mod:`harness.reference`) right before its repetitions. Its move from the base
  run to the new one, case by case, is how much the machine moved then; a case's change is tested
  against that move, with the spread of the reference's moves across the compared cases as its
  noise (normal test, the spread counted for both runs). A machine that ran slower moves the
  reference too; code that got slower does not.
- From one run to the next, over the suite's history: where earlier runs of the suite exist
  (the base and at least one before it, same device and energy method), the new value is judged
  against their spread, as bencher does (Student's t prediction test on log values).

A row's ``p_value`` is the largest of the tests that apply (a change must be beyond each noise;
the intersection-union test), and ``p_adj`` adjusts it by **Holm's** step-down method across every
test of the compare (all metrics of all cases), so a large suite does not flag by chance. A change
is beyond noise when ``p_adj`` < 0.05 **and** the relative change of the medians exceeds the
threshold (asv's factor and significance). Where the run-to-run noise cannot be known (no
reference in both runs and fewer than two earlier runs), a change past the threshold that the
repetitions alone call real is ``cannot tell``, not a regression.

**Accuracy** is compared answer by answer where both runs kept each answer for the same questions
(``answers.json``): **McNemar's exact test** on the questions one run got right and the other
wrong. Otherwise, the two-proportion z-test over the task's samples.

A *regression* is a change beyond noise in the worse direction: more energy or time, fewer tokens
per second, lower accuracy. A case that was ok in the base run and failed in the new one is a
regression too; a case missing from the new run is listed as ``missing``.

A figure is only compared with one obtained the same way: energy metrics are ``not comparable``
when the energy method (measured, estimated) or the sources changed (a run that lost its GPU
sensor counts less energy, which is no improvement), and every speed and energy metric is
``not comparable`` when the device changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.report.stats import Z95, describe
from harness.report.tables import failed_cases
from harness.stopping import _t_two_sided_mass
from harness.workloads import trait
from harness.workloads.accuracy import ANSWERS_FILE

#: metric -> +1 when higher is better, -1 when lower is better
METRICS = {
    "energy_per_query_j": -1,
    "energy_per_token_j": -1,
    "energy_per_request_j": -1,
    "energy_per_step_j": -1,
    "duration_per_step_s": -1,
    "energy_case_j": -1,
    "duration_case_s": -1,
    "energy_per_sample_j": -1,
    "energy_per_run_j": -1,
    "duration_per_run_s": -1,
    "tokens_per_s": +1,
    "ttft_s": -1,
    "tpot_s": -1,
    "accuracy": +1,
}


def workload_metrics(workload: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """The figures compared for a case of ``workload``: per unit of work, never per repetition
    (each workload says its own: ``compare_metrics``); ``default`` for a kind not registered."""
    return trait(workload, "compare_metrics", default)


#: figures of a whole training case: one value a run, no repetitions to test
CASE_TOTALS = {"energy_case_j": "energy_j", "duration_case_s": "duration_s"}
ENERGY_METRICS = {m for m in METRICS if m.startswith("energy_")}
#: which of the reference loop's figures moves with a metric, and how (+1 with it, -1 against it)
REFERENCE_OF = {m: ("energy_j", +1) for m in ENERGY_METRICS}
REFERENCE_OF.update(
    {
        m: ("duration_s", +1)
        for m in ("duration_per_step_s", "duration_case_s", "duration_per_run_s")
    }
)
REFERENCE_OF.update({"ttft_s": ("duration_s", +1), "tpot_s": ("duration_s", +1)})
REFERENCE_OF["tokens_per_s"] = ("duration_s", -1)
#: a figure that is another one over a count fixed by the case: the same test, counted once
SAME_TEST = {"energy_per_token_j": ("energy_per_query_j", "energy_per_request_j")}
#: significance level of the tests, after adjustment
ALPHA = 0.05
#: the multiple-testing adjustment of ``p_adj`` (Holm's step-down, family-wise error)
ADJUSTMENT = "holm"
#: earlier runs of a suite read for its history, newest first (the base counts)
HISTORY_RUNS = 10
#: fewest compared cases with a reference for the spread of the machine's moves across cases
MIN_REFERENCE_CASES = 3
#: fewest runs (the base and earlier) whose spread widens the reference's noise for a case
MIN_HISTORY_FOR_SPREAD = 3

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
    "machine_change_rel",
    "p_value",
    "p_adj",
    "adjustment",
    "noise",
    "beyond_noise",
    "verdict",
    "note",
]

VERDICTS = ("regression", "improvement", "within noise", "cannot tell", "not comparable", "missing")


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


def mcnemar_p(only_base_right: int, only_new_right: int) -> float:
    """Two-sided exact McNemar p-value: the discordant questions, a binomial(n, 1/2) test."""
    n = only_base_right + only_new_right
    if n == 0:
        return 1.0
    k = min(only_base_right, only_new_right)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def normal_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2))


def history_p(earlier: Sequence[float], value: float) -> float:
    """Two-sided p of ``value`` against the spread of ``earlier`` values (log scale): Student's t
    prediction test, ``(x - mean) / (sd × sqrt(1 + 1/k))`` with k - 1 degrees of freedom, as
    bencher's t-test threshold judges a new result against the last runs. NaN below k = 2."""
    logs = np.log([v for v in earlier if v > 0 and math.isfinite(v)])
    if len(logs) < 2 or not (value > 0 and math.isfinite(value)):
        return math.nan
    k = len(logs)
    sd = float(logs.std(ddof=1))
    diff = math.log(value) - float(logs.mean())
    if sd == 0:
        return 1.0 if diff == 0 else 0.0
    t = abs(diff) / (sd * math.sqrt(1 + 1 / k))
    return max(0.0, 1.0 - _t_two_sided_mass(t, k - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ------------------------------------------------------------------------------ case figures
def per_unit(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok repetitions, labelled, with the per-unit figures that the repetitions' columns lack
    (per training step, per accuracy sample, per run of a command)."""
    ok = frame[frame["status"] == "ok"].copy()
    ok["case"] = ok["case"].fillna(ok["case_id"])
    ok["energy_method"] = ok["energy_method"].fillna("unknown")
    energy = pd.to_numeric(ok["energy_j"], errors="coerce")
    duration = pd.to_numeric(ok["duration_s"], errors="coerce")
    steps = pd.to_numeric(ok["steps"], errors="coerce").where(lambda s: s > 0)
    samples = pd.to_numeric(ok["samples"], errors="coerce").where(lambda s: s > 0)
    workload = ok["workload"].fillna("")
    # per the unit each workload says it works in (harness.workloads: ``unit``)
    unit = workload.map({kind: trait(kind, "unit") for kind in workload.unique()})
    ok["energy_per_step_j"] = (energy / steps).where(unit == "step")
    ok["duration_per_step_s"] = (duration / steps).where(unit == "step")
    ok["energy_per_sample_j"] = (energy / samples).where(unit == "sample")
    ok["energy_per_run_j"] = energy.where(unit == "run")
    ok["duration_per_run_s"] = duration.where(unit == "run")
    return ok


@dataclass
class CaseFigures:
    """One case of one run: how it was measured and its per-unit values per metric."""

    case: str
    case_id: str
    workload: str
    identity: dict
    values: dict[str, np.ndarray] = field(default_factory=dict)


def case_figures(frame: pd.DataFrame) -> dict[str, CaseFigures]:
    """Case label -> its figures; a case measured by two methods keeps the measured one."""
    ok = per_unit(frame)
    out: dict[str, CaseFigures] = {}
    for (case, method), reps in ok.groupby(["case", "energy_method"], sort=False):
        if case in out and method != "measured":
            continue
        first = reps.iloc[0]
        workload = str(first["workload"]) if pd.notna(first["workload"]) else ""
        ident = {
            k: first.get(k) for k in ("energy_method", "energy_sources", "device", "device_name")
        }
        figures = CaseFigures(str(case), str(first["case_id"]), workload, ident)
        for metric in workload_metrics(workload, ("energy_per_query_j", "energy_per_token_j")):
            if metric in CASE_TOTALS:
                column = pd.to_numeric(reps[CASE_TOTALS[metric]], errors="coerce")
                if column.notna().all() and len(column):
                    figures.values[metric] = np.array([float(column.sum())])
                continue
            if metric not in reps.columns:
                continue
            v = pd.to_numeric(reps[metric], errors="coerce").to_numpy(float)
            v = v[np.isfinite(v)]
            if len(v):
                figures.values[metric] = v
        samples = pd.to_numeric(reps["samples"], errors="coerce").dropna()
        figures.identity["samples"] = float(samples.median()) if len(samples) else math.nan
        out[str(case)] = figures
    return out


def _summary(values: np.ndarray, metric: str, samples: float) -> tuple[float, float, float]:
    """Median and 95% interval (Wilson's over the samples for accuracy)."""
    if metric == "accuracy":
        p = float(np.median(values))
        if not (math.isfinite(samples) and samples > 0):
            return p, math.nan, math.nan
        from harness.report.stats import wilson

        low, high = wilson(np.array([p]), np.array([samples]))
        return p, float(low[0]), float(high[0])
    d = describe(values.tolist())
    return d["median"], d["ci_low"], d["ci_high"]


# ------------------------------------------------------------------------------ noise
@dataclass
class Noise:
    """What is known of run-to-run noise for a compare: the reference loop of each case in both
    runs, the cases' answers, and the suite's earlier runs (base first, then older)."""

    #: case label -> reference.json of the base and the new run
    base_reference: dict[str, dict] = field(default_factory=dict)
    new_reference: dict[str, dict] = field(default_factory=dict)
    #: case label -> answers.json of the base and the new run
    base_answers: dict[str, dict] = field(default_factory=dict)
    new_answers: dict[str, dict] = field(default_factory=dict)
    #: the frames of runs before the base run, newest first
    history: list[pd.DataFrame] = field(default_factory=list)
    #: case label -> reference.json of each of those runs (same order; empty where none)
    history_references: list[dict[str, dict]] = field(default_factory=list)


def read_case_files(run_path: Path, frame: pd.DataFrame) -> tuple[dict, dict]:
    """Case label -> reference.json and case label -> answers.json of one run folder."""
    from harness import reference, store

    references, answers = {}, {}
    labels = frame[["case_id", "case"]].dropna(subset=["case_id"]).drop_duplicates("case_id")
    for case_id, case in labels.itertuples(index=False):
        label = case if isinstance(case, str) else case_id
        folder = Path(run_path) / "cases" / str(case_id)
        ref = reference.read(folder)
        if ref is not None:
            references[label] = ref
        try:
            data = store.read_json(folder / ANSWERS_FILE)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("samples"), list):
            answers[label] = data
    return references, answers


def noise_for(base, new, history: Sequence = ()) -> Noise:
    """The :class:`Noise` of two opened runs (``harness.report.load.Run``) and earlier ones."""
    base_ref, base_ans = read_case_files(base.path, base.frame)
    new_ref, new_ans = read_case_files(new.path, new.frame)
    history_refs = [read_case_files(r.path, r.frame)[0] for r in history]
    return Noise(base_ref, new_ref, base_ans, new_ans, [r.frame for r in history], history_refs)


def earlier_runs(base, folders: Sequence[Path], limit: int = HISTORY_RUNS - 1) -> list:
    """Runs of ``base``'s suite that started before it in ``folders``, newest first."""
    from harness.report.load import Run, is_run_dir, open_run, read_manifest

    found: dict[Path, Run] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            continue
        for d in Path(folder).iterdir():
            if not d.is_dir() or not is_run_dir(d) or d.resolve() == Path(base.path).resolve():
                continue
            other = Run(path=d, manifest=read_manifest(d), frame=pd.DataFrame())
            if other.suite_name == base.suite_name and other.sort_key() < base.sort_key():
                found.setdefault(d.resolve(), other)
    newest = sorted(found.values(), key=Run.sort_key, reverse=True)[:limit]
    return [open_run(r.path) for r in newest]


def _log_ratio(new: float, base: float) -> float:
    if not (new > 0 and base > 0):
        return math.nan
    return math.log(new / base)


def _machine_moves(noise: Noise, cases: set[str]) -> dict[str, dict]:
    """Case label -> {figure: log ratio of the reference loop, new over base}; energy only when
    both references were measured the same way."""
    moves = {}
    for case, b in noise.base_reference.items():
        n = noise.new_reference.get(case)
        if n is None or case not in cases:
            continue
        move = {"duration_s": _log_ratio(n["duration_s"], b["duration_s"])}
        if b.get("method") == n.get("method"):
            move["energy_j"] = _log_ratio(n.get("energy_j") or 0, b.get("energy_j") or 0)
        for figure in list(move):
            if math.isfinite(move[figure]):  # each run's own level, for the spread through a run
                move[f"base_{figure}"] = math.log(b[figure])
                move[f"new_{figure}"] = math.log(n[figure])
        moves[case] = move
    return moves


def _spread(moves: dict[str, dict], figure: str) -> float:
    """The noise of the machine's move for one case (sd, log scale): the larger of the spread of
    the reference's moves across the compared cases (3 or more) and the spread of the reference
    across each run's cases (how the machine changed through a run, counted for both runs). NaN
    from fewer cases: the loop's windows back to back say nothing of how a run moves."""
    known = []
    values = [m[figure] for m in moves.values() if math.isfinite(m.get(figure, math.nan))]
    if len(values) >= MIN_REFERENCE_CASES:
        known.append(float(np.std(values, ddof=1)))
    pooled, df = 0.0, 0
    for side in ("base", "new"):
        logs = [m[f"{side}_{figure}"] for m in moves.values() if f"{side}_{figure}" in m]
        if len(logs) >= 2:
            pooled += float(np.var(logs, ddof=1)) * (len(logs) - 1)
            df += len(logs) - 1
    if df:
        known.append(math.sqrt(2 * pooled / df))
    return max(known) if known else math.nan


def _paired_accuracy(noise: Noise, case: str) -> tuple[float, str] | None:
    """McNemar's exact p over the questions both runs answered (None when they share none)."""
    b, n = noise.base_answers.get(case), noise.new_answers.get(case)
    if not b or not n or b.get("metric") != n.get("metric"):
        return None
    base = {a.get("question_sha"): a.get("correct") for a in b["samples"] if isinstance(a, dict)}
    new = {a.get("question_sha"): a.get("correct") for a in n["samples"] if isinstance(a, dict)}
    shared = [q for q in base if q is not None and q in new]
    if not shared:
        return None
    only_base = sum(1 for q in shared if base[q] and not new[q])
    only_new = sum(1 for q in shared if new[q] and not base[q])
    return mcnemar_p(only_base, only_new), (
        f"paired over {len(shared)} questions: {only_base} right only before, "
        f"{only_new} right only now (McNemar, exact)"
    )


# ------------------------------------------------------------------------------ compare
def _text(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _changed(b: dict, n: dict, column: str) -> str | None:
    old, new = _text(b.get(column)), _text(n.get(column))
    if old == new:
        return None
    return f"{column.replace('_', ' ')} {old or '?'} -> {new or '?'}"


def _history_values(
    history: list[dict[str, CaseFigures]],
    references: list[dict[str, dict]],
    case: str,
    metric: str,
    like: dict,
) -> list[tuple[float, dict | None]]:
    """The case's median of ``metric`` in each earlier run measured the same way as ``like``,
    with the case's reference loop in that run (None where it has none)."""
    out = []
    for i, run in enumerate(history):
        f = run.get(case)
        if f is None or metric not in f.values:
            continue
        same = all(
            _text(f.identity.get(k)) == _text(like.get(k))
            for k in ("energy_method", "energy_sources", "device", "device_name")
        )
        if same:
            ref = references[i].get(case) if i < len(references) else None
            out.append((float(np.median(f.values[metric])), ref))
    return out


def _machine_free_sd(values: list[float], refs: list, figure: str, sign: int) -> float:
    """The spread (sd of logs) of a case's values over runs, each less its run's reference loop
    where every run has one (the machine's part taken out), else as measured."""
    logs = np.log([v if v > 0 and math.isfinite(v) else math.nan for v in values])
    loop = [(r or {}).get(figure) for r in refs]
    if all(isinstance(x, (int, float)) and x > 0 for x in loop):
        logs = logs - sign * np.log(np.asarray(loop, dtype=float))
    logs = logs[np.isfinite(logs)]
    return float(logs.std(ddof=1)) if len(logs) >= 2 else 0.0


def compare_frames(
    base: pd.DataFrame,
    new: pd.DataFrame,
    threshold: float = 0.05,
    noise: Noise | None = None,
) -> pd.DataFrame:
    """Rows of :data:`COLUMNS` for every metric of every case the two runs of repetitions share,
    then the cases that now fail and those missing from the new run. Without ``noise`` (no
    reference, no history) a change past the threshold is ``cannot tell``."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a finite number >= 0, not {threshold!r}")
    noise = noise or Noise()
    base_cases, new_cases = case_figures(base), case_figures(new)
    history = [case_figures(f) for f in noise.history]
    shared = [c for c in base_cases if c in new_cases]
    moves = _machine_moves(noise, set(shared))
    rows: list[dict] = []
    for case in shared:
        bc, nc = base_cases[case], new_cases[case]
        method_change = _changed(bc.identity, nc.identity, "energy_method") or _changed(
            bc.identity, nc.identity, "energy_sources"
        )
        device_change = _changed(bc.identity, nc.identity, "device") or _changed(
            bc.identity, nc.identity, "device_name"
        )
        for metric in workload_metrics(bc.workload, tuple(bc.values)):
            if metric not in bc.values or metric not in nc.values:
                continue
            rows.append(
                _row(case, metric, bc, nc, noise, moves, history, method_change, device_change)
            )
    tests = _adjust(rows, threshold)
    rows += _status_rows(base, new, base_cases, new_cases)
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.DataFrame(rows).reindex(columns=COLUMNS)
    out.attrs["tests"] = tests  # the size of Holm's family
    order = {c: i for i, c in enumerate(dict.fromkeys(out["case"]))}
    out["_o"] = out["case"].map(order)
    out = out.sort_values(["_o"], kind="stable").drop(columns="_o").reset_index(drop=True)
    out.attrs["tests"] = tests
    return out


def _row(case, metric, bc, nc, noise, moves, history, method_change, device_change) -> dict:
    """One metric of one case, tested; the verdict is set later, after the adjustment."""
    b_values, n_values = bc.values[metric], nc.values[metric]
    bm, b_low, b_high = _summary(b_values, metric, bc.identity.get("samples", math.nan))
    nm, n_low, n_high = _summary(n_values, metric, nc.identity.get("samples", math.nan))
    if bm != 0:
        rel = (nm - bm) / abs(bm)
    else:
        rel = 0.0 if nm == bm else math.inf
    row = {
        "case": case,
        "metric": metric,
        "base": bm,
        "base_ci_low": b_low,
        "base_ci_high": b_high,
        "new": nm,
        "new_ci_low": n_low,
        "new_ci_high": n_high,
        "change_rel": rel,
        "machine_change_rel": math.nan,
        "p_value": math.nan,
        "adjustment": ADJUSTMENT,
        "note": "",
        "_worse": bool(np.sign(nm - bm) == -METRICS[metric]),
        "_known": True,
    }
    unlike = device_change if metric != "accuracy" else None
    if metric in ENERGY_METRICS and method_change:
        unlike = method_change
    if unlike:
        row.update(verdict="not comparable", note=unlike, noise="", adjustment="")
        return row
    if metric == "accuracy":
        paired = _paired_accuracy(noise, case)
        if paired is not None:
            row["p_value"], row["note"] = paired
            row["noise"] = "paired answers"
        else:
            row["p_value"] = proportion_p(
                bm, bc.identity.get("samples", math.nan), nm, nc.identity.get("samples", math.nan)
            )
            row["noise"] = "two proportions"
            if math.isnan(row["p_value"]):
                row["note"] = "no sample counts: threshold only"
        return row
    tests, kinds, notes = [], [], []
    welch = welch_p(b_values, n_values)
    if math.isfinite(welch):
        tests.append(welch)
        kinds.append("repetitions")
    change = _log_ratio(nm, bm)
    figure, sign = REFERENCE_OF.get(metric, (None, 0))
    move = moves.get(case, {}).get(figure, math.nan) if figure else math.nan
    past = _history_values(history, noise.history_references, case, metric, bc.identity)
    earlier = [float(np.median(b_values))] + [v for v, _ in past]
    spread = _spread(moves, figure) if math.isfinite(move) else math.nan
    run_to_run = False
    if math.isfinite(move):
        row["machine_change_rel"] = math.exp(sign * move) - 1
    if math.isfinite(spread) and math.isfinite(change):
        # the case's move less the machine's, against the machine's moves; a case whose own
        # history, less the machine's part, moves more than the reference does is judged by that
        # wider spread
        if len(earlier) >= MIN_HISTORY_FOR_SPREAD:
            refs = [noise.base_reference.get(case)] + [r for _, r in past]
            spread = max(spread, _machine_free_sd(earlier, refs, figure, sign))
        residual = change - sign * move
        if spread > 0:
            p_run = normal_p(residual / (spread * math.sqrt(2)))
        else:
            p_run = 1.0 if residual == 0 else 0.0
        tests.append(p_run)
        kinds.append(
            "reference"
            + (
                f" + history of {len(earlier)} runs"
                if len(earlier) >= MIN_HISTORY_FOR_SPREAD
                else ""
            )
        )
        run_to_run = True
        notes.append(f"machine {100 * row['machine_change_rel']:+.1f}% (reference loop)")
    else:
        p_hist = history_p(earlier, nm)  # no reference: the new value against the last runs
        if math.isfinite(p_hist):
            tests.append(p_hist)
            kinds.append(f"history of {len(earlier)} runs")
            run_to_run = True
    row["p_value"] = max(tests) if tests else math.nan
    row["noise"] = " + ".join(kinds)
    row["_known"] = run_to_run
    if not run_to_run:
        notes.append("run-to-run noise unknown (no reference loop, fewer than 2 earlier runs)")
    row["note"] = "; ".join(notes)
    return row


def _adjust(rows: list[dict], threshold: float) -> int:
    """Holm across the rows' tests, then each row's verdict; returns how many tests counted."""
    tested = [r for r in rows if r.get("verdict") != "not comparable"]
    # a figure that is another one of the same case over a fixed count (J/token = J/query ÷
    # new_tokens) is the same test: counted once, its twin's p_adj
    twin_of = {}
    by_case = {(r["case"], r["metric"]): i for i, r in enumerate(tested)}
    for i, r in enumerate(tested):
        for twin in SAME_TEST.get(r["metric"], ()):
            j = by_case.get((r["case"], twin))
            if j is not None:
                twin_of[i] = j
                break
    family = [i for i in range(len(tested)) if i not in twin_of]
    adjusted = dict(zip(family, holm([tested[i]["p_value"] for i in family]), strict=True))
    for i, r in enumerate(tested):
        p_adj = adjusted[twin_of.get(i, i)]
        r["p_adj"] = p_adj
        past = abs(r["change_rel"]) > threshold
        significant = past and (math.isnan(p_adj) or p_adj < ALPHA)
        if not significant:
            r["verdict"], r["beyond_noise"] = "within noise", False
        elif not r["_known"]:
            r["verdict"], r["beyond_noise"] = "cannot tell", False
        else:
            r["verdict"] = "regression" if r["_worse"] else "improvement"
            r["beyond_noise"] = True
        if math.isnan(r["p_value"]) and not r["note"]:
            r["note"] = "no test applies: threshold only"
    for r in rows:
        r.setdefault("beyond_noise", False)
        r.setdefault("p_adj", math.nan)
    return sum(1 for i in family if math.isfinite(tested[i]["p_value"]))


def _status_rows(base, new, base_cases, new_cases) -> list[dict]:
    """Cases that were ok and now fail; cases the new run does not have at all."""
    rows = []
    failed = failed_cases(new)
    failed_labels = failed["case"].fillna(failed["case_id"])
    keep = failed_labels.isin(set(base_cases)) & ~failed_labels.isin(set(new_cases))
    for _, f in failed[keep].iterrows():
        rows.append(
            {
                "case": f["case"] if pd.notna(f["case"]) else f["case_id"],
                "metric": "status",
                "beyond_noise": True,
                "verdict": "regression",
                "note": f"failed: {_text(f['error'])}",
            }
        )
    new_labels = set(new_cases) | set(failed_labels)
    for case in base_cases:
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
    return rows


def compare_runs(base, new, threshold: float = 0.05, history: Sequence = ()) -> pd.DataFrame:
    """:func:`compare_frames` of two opened runs with what their folders know of the noise:
    each case's reference loop and answers, and ``history`` (earlier runs, newest first)."""
    return compare_frames(base.frame, new.frame, threshold, noise_for(base, new, history))


def has_regression(rows: pd.DataFrame, strict: bool = False) -> bool:
    """A regression (with ``strict``, also a worse change that cannot be told from noise)."""
    bad = rows["verdict"] == "regression"
    if strict:
        worse = np.sign(rows["change_rel"].astype(float)) * rows["metric"].map(METRICS).fillna(0)
        bad |= (rows["verdict"] == "cannot tell") & (worse < 0)
    return bool(bad.any())


__all__ = [
    "ADJUSTMENT",
    "COLUMNS",
    "METRICS",
    "Noise",
    "Z95",
    "compare_frames",
    "compare_runs",
    "earlier_runs",
    "has_regression",
    "history_p",
    "holm",
    "mcnemar_p",
    "proportion_p",
    "welch_p",
]
