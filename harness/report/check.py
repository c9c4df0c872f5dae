"""``harness check``: may a row be published? A verdict per repetition, case and setup.

Each rule is a small named function over one case's rows, with the source it follows and what it
protects (docs/methodology.md, "Checks"). A rule gives each row it applies to a finding: ``pass``,
``warn`` or ``fail``, with the figures that decided it. A rule that needs a figure the row lacks
does not apply to that row (no finding): columns written by newer workloads start being checked
when they appear. A row's verdict (column ``check``) is its worst finding, ``check_rules`` names
the rules that warned or failed and why; a case's verdict is the worst of its rows, a setup's (the
summary's and leaderboard's rows) the worst of its cases.

Thresholds a user may need to change are the suite's ``checks:`` block (``harness.suite.Checks``,
where the defaults and their sources live); the others are fixed by their source.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.workloads import kinds, trait

PASS, WARN, FAIL = "pass", "warn", "fail"
LEVELS = (PASS, WARN, FAIL)
_RANK = {PASS: 0, WARN: 1, FAIL: 2}

ML_ENERGY = "ML.ENERGY benchmark, scripts/validate_results.py"
MLPERF = "MLPerf Power (measurement rules)"
ZEUS = "Zeus (ml-energy/zeus)"
HARNESS = "this harness's measurement rules (ARCHITECTURE.md)"


@dataclass(frozen=True)
class Finding:
    rule: str
    level: str
    detail: str


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    protects: str
    #: one case's rows -> {row index: finding}; rows it does not apply to are absent
    apply: Callable[[Case, Context], dict]


@dataclass
class Case:
    """One case's rows, as (frame index, row as a dict) pairs."""

    rows: list[tuple[object, dict]]


@dataclass
class Context:
    """What the rules need beyond the rows: thresholds, idle baselines, TDPs, carbon facts."""

    checks: object  # harness.suite.Checks
    #: the thresholds the suite's checks: block set itself (they override a row's own)
    explicit: set[str] = field(default_factory=set)
    #: hardware profile -> idle watts of the whole total (idle.json's "total")
    idle_w: dict[str, float] = field(default_factory=dict)
    #: the CPU's TDP for the whole machine, and where it came from (None: unknown)
    cpu_tdp_w: float | None = None
    cpu_tdp_source: str = ""
    #: the suite's target_rel_ci (a max_repeats stop that reached it is fine)
    target_rel_ci: float = 0.05
    #: the suite's measurement.max_temp_drift_c (the checks block's default)
    measurement_drift_c: float | None = None
    carbon_origin: str | None = None
    #: the intensity the report prices CO2e at where a row recorded none (gCO2e/kWh)
    grid_intensity: float | None = None
    #: why there is no embodied figure (None: there is one); "" when not assessed
    embodied_missing: str | None = ""


RULES: list[Rule] = []


def _num(row: dict, col: str) -> float | None:
    """A row's number, None where the column is absent, empty or not a number."""
    v = row.get(col)
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _text(row: dict, col: str) -> str:
    v = row.get(col)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def row_rule(name: str, source: str, protects: str, *, failed_rows: bool = False):
    """A rule over one row: ``fn(row, ctx)`` returns ``(level, detail)`` or None (does not apply).
    Only ok rows are judged unless ``failed_rows``."""

    def register(fn):
        def apply(case: Case, ctx: Context) -> dict:
            out = {}
            for i, row in case.rows:
                if not failed_rows and row.get("status") != "ok":
                    continue
                got = fn(row, ctx)
                if got is not None:
                    out[i] = Finding(name, *got)
            return out

        RULES.append(Rule(name, source, protects, apply))
        return fn

    return register


def case_rule(name: str, source: str, protects: str):
    """A rule over a case's ok rows together: ``fn(rows, ctx)`` (rows: dicts) ->
    ``(level, detail)`` or None; the finding is every ok row's."""

    def register(fn):
        def apply(case: Case, ctx: Context) -> dict:
            ok = [(i, r) for i, r in case.rows if r.get("status") == "ok"]
            if not ok:
                return {}
            got = fn([r for _, r in ok], ctx)
            return {} if got is None else {i: Finding(name, *got) for i, _ in ok}

        RULES.append(Rule(name, source, protects, apply))
        return fn

    return register


# --- the case itself ---------------------------------------------------------------------------

_BUDGET = "energy budget:"


@row_rule(
    "case.status",
    HARNESS,
    "a case that failed has no figure to publish",
    failed_rows=True,
)
def case_status(row, ctx):
    status = _text(row, "status") or "ok"
    if status == "ok":
        return PASS, "ok"
    error = _text(row, "error")
    if error.startswith(_BUDGET):
        return None  # train.budget says why
    return FAIL, f"{status}: {error or 'no reason recorded'}"


# --- energy ------------------------------------------------------------------------------------


@row_rule(
    "energy.method",
    ML_ENERGY + "; " + HARNESS,
    "a figure is never published without saying how it was obtained, nor with no energy at all",
)
def energy_method(row, ctx):
    method = _text(row, "energy_method")
    energy = _num(row, "energy_j")
    if method not in ("measured", "estimated"):
        return FAIL, f"energy method {method or 'missing'!r} (measured or estimated expected)"
    if energy is None or energy <= 0:
        return FAIL, f"energy_j {energy if energy is not None else 'missing'} (must be > 0)"
    return PASS, method


#: meter warnings (harness/meter.py, sensors/) that mean a part of the total is missing
_LOST = re.compile(r"(\S+): (lost (?:mid-window|before the window)|not read at the window's edge)")
#: those that mean the total is doubtful but complete
_DOUBT = re.compile(
    r"(\S+): (counter reset|counter did not move|reads 0 while|its reading froze|"
    r"no reading for [^ ]+ s \(sampler gap\)|stopped mirroring)"
)


@row_rule(
    "energy.domains",
    ZEUS + "; " + HARNESS,
    "a total that left out a domain it relies on (lost, unread) understates the energy",
)
def energy_domains(row, ctx):
    warnings = _text(row, "warnings")
    lost = sorted({f"{m.group(1)} {m.group(2)}" for m in _LOST.finditer(warnings)})
    if lost:
        return FAIL, "; ".join(lost).replace(";", ",")
    doubt = sorted({f"{m.group(1)} {m.group(2)}" for m in _DOUBT.finditer(warnings)})
    if doubt:
        return WARN, ", ".join(doubt)
    return PASS, "every domain read at both edges"


_COARSE = re.compile(r"(\S+): window of (\S+) s is shorter than (\d+) update periods")


@row_rule(
    "energy.update_periods",
    ZEUS + " (window at least 10 update periods)",
    "a window of few counter updates rounds its energy by up to a period's worth",
)
def energy_update_periods(row, ctx):
    coarse = _COARSE.findall(_text(row, "warnings"))
    if coarse:
        d, s, n = coarse[0]
        return WARN, f"{d}: window {s} s < {n} update periods"
    return PASS, "window spans at least 10 update periods of each domain"


def _watts(row, col: str) -> float | None:
    j, s = _num(row, col), _num(row, "duration_s")
    return j / s if j is not None and s else None


@row_rule(
    "energy.power_band",
    ML_ENERGY + " (average power within [idle, 1.1 × TDP], instant power < 1.7 × TDP)",
    "a power outside what the device can draw is a sensor or accounting error",
)
def energy_power_band(row, ctx):
    c = ctx.checks
    problems, warns, seen = [], [], []
    cpu_w = _watts(row, "energy_cpu_j")
    if cpu_w is not None and ctx.cpu_tdp_w:
        seen.append(f"cpu {cpu_w:.3g} W (TDP {ctx.cpu_tdp_w:.4g} W)")
        if cpu_w > c.max_power_tdp_ratio * ctx.cpu_tdp_w:
            problems.append(
                f"cpu {cpu_w:.3g} W > {c.max_power_tdp_ratio:g} × TDP {ctx.cpu_tdp_w:.4g} W"
            )
    gpu_w, limit = _watts(row, "energy_gpu_j"), _num(row, "power_limit_w")
    if gpu_w is not None and limit:
        seen.append(f"gpu {gpu_w:.3g} W (limit {limit:.4g} W)")
        if gpu_w > c.max_power_tdp_ratio * limit:
            problems.append(
                f"gpu {gpu_w:.3g} W > {c.max_power_tdp_ratio:g} × power limit {limit:.4g} W"
            )
    peak, tdp = _num(row, "peak_power_w"), _tdp_of(row, ctx)
    if peak is not None and tdp:
        if peak > c.max_peak_tdp_ratio * tdp:
            problems.append(f"peak {peak:.3g} W > {c.max_peak_tdp_ratio:g} × TDP {tdp:.4g} W")
    avg = _num(row, "avg_power_w")
    idle = ctx.idle_w.get(_text(row, "hardware"))
    if avg is not None and idle:
        seen.append(f"avg {avg:.3g} W (idle {idle:.3g} W)")
        if avg < (1 - IDLE_TOLERANCE) * idle:
            warns.append(f"avg {avg:.3g} W below the idle baseline {idle:.3g} W")
    if problems:
        return FAIL, ", ".join(problems)
    if warns:
        return WARN, ", ".join(warns)
    return (PASS, ", ".join(seen)) if seen else None


#: an average this close under the idle baseline is the baseline's own noise, not a fault
IDLE_TOLERANCE = 0.02


def _tdp_of(row, ctx) -> float | None:
    """The whole device's TDP that bounds the row's total power, where known."""
    if _text(row, "device").startswith("cuda"):
        limit = _num(row, "power_limit_w")
        return (limit + (ctx.cpu_tdp_w or 0)) if limit and ctx.cpu_tdp_w else None
    return ctx.cpu_tdp_w if _num(row, "energy_gpu_j") is None else None


@row_rule(
    "energy.counter_vs_power",
    ZEUS + "; harness sensors --check (2 %)",
    "a counter that disagrees with its own integrated power reads wrong",
)
def energy_counter_vs_power(row, ctx):
    rel = _num(row, "counter_vs_power")  # written where a source has both in a window
    if rel is None:
        return None
    limit = ctx.checks.max_counter_power_diff
    if abs(rel) > limit:
        return WARN, f"counter and integrated power differ by {rel * 100:+.1f} % (> {limit:.0%})"
    return PASS, f"{rel * 100:+.1f} %"


# --- repetitions -------------------------------------------------------------------------------


def _values(rows: list[dict], col: str) -> np.ndarray:
    """A column's finite numbers over rows."""
    v = np.array([x for r in rows if (x := _num(r, col)) is not None], dtype=float)
    return v


@case_rule(
    "repeat.stop_reason",
    MLPERF + " (repeat until the figure is known to its target)",
    "a figure that stopped before its interval reached the target is less certain than it says",
)
def repeat_stop_reason(rows, ctx):
    reason = _text(rows[0], "stop_reason")
    if not reason:
        return None
    if reason in ("converged", "planned"):
        return PASS, reason
    if reason == "max_repeats":
        from harness.stopping import ci_half_width

        e = _values(rows, "energy_j")
        if len(e) >= 2 and np.median(e) > 0:
            rel = ci_half_width(list(e)) / abs(float(np.median(e)))
            if rel <= ctx.target_rel_ci:
                return PASS, f"max_repeats with the interval ±{rel:.1%} reached"
            return WARN, f"max_repeats: interval ±{rel:.1%} > target_rel_ci {ctx.target_rel_ci:g}"
        return WARN, "max_repeats with too few figures for an interval"
    if reason == "time_budget":
        return WARN, "time_budget: stopped at 85% of case_timeout_s before converging"
    return WARN, f"stop reason {reason!r} is none of converged, planned, max_repeats"


@case_rule(
    "repeat.energy_cv",
    MLPERF + "; " + ML_ENERGY,
    "repetitions that scatter widely measure the machine's noise as much as the workload",
)
def repeat_energy_cv(rows, ctx):
    e = _values(rows, "energy_j")
    if len(e) < 2 or np.mean(e) <= 0:
        return None
    cv = float(np.std(e, ddof=1) / np.mean(e))
    limit = ctx.checks.max_energy_cv
    if cv > limit:
        return WARN, f"energy CV {cv:.1%} over {len(e)} repetitions > max_energy_cv {limit:g}"
    return PASS, f"energy CV {cv:.1%}"


# --- thermal -----------------------------------------------------------------------------------


@row_rule(
    "thermal.drift",
    ML_ENERGY + " (temperature within 20–95 °C); " + HARNESS,
    "a machine heating or cooling through a window does not do the same work for the same energy",
)
def thermal_drift(row, ctx):
    c = ctx.checks
    a, b = _num(row, "temp_start_c"), _num(row, "temp_end_c")
    meter_drift = re.search(r"(\S+): thermal drift of ([^ ]+ °C)", _text(row, "warnings"))
    limit = c.max_temp_drift_c if c.max_temp_drift_c is not None else ctx.measurement_drift_c
    out = []
    if a is not None and b is not None and limit is not None and abs(b - a) > limit:
        out.append(f"{b - a:+.1f} °C in the window > max_temp_drift_c {limit:g}")
    elif meter_drift:
        out.append(f"{meter_drift.group(1)} drift {meter_drift.group(2)}")
    hottest = max((t for t in (a, b) if t is not None), default=None)
    if hottest is not None and hottest > c.max_temp_c:
        out.append(f"{hottest:.0f} °C > max_temp_c {c.max_temp_c:g}")
    if out:
        return WARN, ", ".join(out)
    if a is None and b is None:
        return None
    return PASS, f"{a if a is not None else '?'} → {b if b is not None else '?'} °C"


@case_rule(
    "thermal.throttle",
    ZEUS + " (clocks and power limits as part of the measurement)",
    "a clock that fell in some windows measured a slower machine than the others",
)
def thermal_throttle(rows, ctx):
    clocks = _values(rows, "clock_mhz")
    if not len(clocks) or clocks.max() <= 0:
        return None
    share = float(clocks.min() / clocks.max())
    limit = ctx.checks.min_clock_share
    if share < limit:
        return WARN, (
            f"clock fell to {clocks.min():.0f} MHz, {share:.0%} of the case's "
            f"{clocks.max():.0f} MHz (< min_clock_share {limit:g})"
        )
    return PASS, f"clock {clocks.min():.0f}–{clocks.max():.0f} MHz"


# --- serving -----------------------------------------------------------------------------------


def _serve(row) -> bool:
    """A served workload's row (its unit is a request)."""
    return trait(_text(row, "workload"), "unit") == "request"


@row_rule(
    "serve.requests",
    ML_ENERGY + " (every request succeeded)",
    "energy per request over requests that failed counts work that was never done",
)
def serve_requests(row, ctx):
    ok, failed = _num(row, "requests_ok"), _num(row, "requests_failed")
    if not _serve(row) or ok is None or failed is None:
        return None
    limit = _threshold(row, ctx, "max_failed_share")
    share = failed / (ok + failed) if ok + failed else 1.0
    if share > limit:
        why = _text(row, "first_error")
        return FAIL, f"{failed:.0f} of {ok + failed:.0f} requests failed (> {limit:g})" + (
            f", first: {why}".replace(";", ",") if why else ""
        )
    return PASS, f"{failed:.0f} of {ok + failed:.0f} requests failed"


def _threshold(row, ctx, key: str) -> float:
    """The suite's checks: value if it set one, else the row's own (the serve workload's), else
    the checks block's default."""
    if key in ctx.explicit:
        return float(getattr(ctx.checks, key))
    own = _num(row, key)
    return own if own is not None else float(getattr(ctx.checks, key))


@row_rule(
    "serve.steady_window",
    ML_ENERGY + " (a steady window of at least 30 s)",
    "a short steady window is mostly ramp-up and drain noise, not the steady state it names",
)
def serve_steady_window(row, ctx):
    steady = _num(row, "steady_s")
    if not _serve(row) or steady is None:
        return None
    limit = _threshold(row, ctx, "min_steady_s")
    if steady < limit:
        return FAIL, f"steady window {steady:.3g} s < min_steady_s {limit:g}"
    return PASS, f"steady window {steady:.3g} s"


@row_rule(
    "serve.offered_rate",
    ML_ENERGY + "; vLLM benchmarks/serve.py",
    "an open-loop case that could not send at its rate measured a lighter load than it names; "
    "one whose server served under 0.9 × the offered rate measured a growing queue, not a "
    "steady state",
)
def serve_offered_rate(row, ctx):
    rate, offered = _num(row, "rate_rps"), _num(row, "offered_rps")
    if not _serve(row) or not rate or offered is None:
        return None
    limit = ctx.checks.min_offered_share
    if offered < limit * rate:
        return WARN, f"offered {offered:.3g} req/s < {limit:g} × rate_rps {rate:g}"
    from harness.workloads.serve import KEPT_UP  # the serve row's own "kept up" line

    served = _num(row, "requests_per_s")
    if served is not None and served < KEPT_UP * offered:
        return WARN, (
            f"served {served:.3g} req/s < {KEPT_UP:g} × the {offered:.3g} offered: "
            "the queue grew through the window"
        )
    return PASS, f"offered {offered:.3g} of {rate:g} req/s"


@row_rule(
    "serve.inflight",
    ML_ENERGY + " (average batch at least 0.8 of the slots)",
    "a closed-loop case whose requests were not in flight measured a smaller batch than it names",
)
def serve_inflight(row, ctx):
    inflight, conc = _num(row, "inflight_avg"), _num(row, "concurrency")
    if not _serve(row) or inflight is None or not conc or _num(row, "rate_rps"):
        return None  # open loop: what is in flight follows the arrivals, not the slots
    limit = ctx.checks.min_inflight_share
    if inflight < limit * conc:
        return WARN, f"{inflight:.3g} requests in flight on average < {limit:g} × {conc:g}"
    return PASS, f"{inflight:.3g} of {conc:g} in flight"


@row_rule(
    "serve.energy_per_token",
    ML_ENERGY + " (0 < J/token <= 100)",
    "a J/token of zero or beyond any real device is a broken window or token count",
)
def serve_energy_per_token(row, ctx):
    if trait(_text(row, "workload"), "unit") not in ("request", "query"):
        return None
    ept = _num(row, "energy_per_token_j")
    if ept is None:
        return None
    limit = ctx.checks.max_energy_per_token_j
    if not 0 < ept <= limit:
        return FAIL, f"{ept:.4g} J/token outside (0, {limit:g}]"
    return PASS, f"{ept:.4g} J/token"


@row_rule(
    "serve.prefill",
    ML_ENERGY + " (every measured request prefilled in full)",
    "a prompt cache that skipped prefill makes a request look cheaper than a real one",
)
def serve_prefill(row, ctx):
    server, sent = _num(row, "server_prompt_tokens"), _num(row, "sent_prompt_tokens")
    if not _serve(row) or server is None or sent is None:
        return None
    if server != sent:
        return FAIL, f"server prefilled {server:.0f} prompt tokens of {sent:.0f} sent"
    return PASS, f"{sent:.0f} prompt tokens prefilled"


# --- training ----------------------------------------------------------------------------------


@case_rule(
    "train.forecast",
    ZEUS + " (energy forecasts); " + HARNESS,
    "a forecast whose interval missed the actual total is not the guide it claims to be",
)
def train_forecast(rows, ctx):
    # the forecast joins the records of the chunk in which it was made
    made = [r for r in rows if _num(r, "forecast_j") is not None]
    if not made:
        return None
    first = made[0]
    f, lo, hi = (_num(first, c) for c in ("forecast_j", "forecast_j_ci_low", "forecast_j_ci_high"))
    if f is None:
        return None
    actual = float(_values(rows, "energy_j").sum())
    if actual <= 0:
        return None
    err = (f - actual) / actual
    if lo is not None and hi is not None and not lo <= actual <= hi:
        return WARN, (
            f"actual {actual:.4g} J outside the forecast's interval {lo:.4g}–{hi:.4g} J "
            f"({err:+.0%})"
        )
    return PASS, f"forecast {f:.4g} J, actual {actual:.4g} J ({err:+.0%})"


@row_rule(
    "train.budget",
    HARNESS + " (energy_budget_j)",
    "a training stopped by its energy budget made no model to publish",
    failed_rows=True,
)
def train_budget(row, ctx):
    error = _text(row, "error")
    if error.startswith(_BUDGET):
        return FAIL, error.replace(";", ",")
    return None


# --- accuracy ----------------------------------------------------------------------------------


@row_rule(
    "accuracy.samples",
    "lm-evaluation-harness (standard error); Wilson's score interval",
    "an accuracy over too few samples cannot tell setups apart",
)
def accuracy_samples(row, ctx):
    from harness.report.stats import samples_from_stderr, wilson

    acc = _num(row, "accuracy")
    if acc is None:
        return None
    n = _num(row, "samples")
    if n is None and _num(row, "accuracy_stderr") is not None:
        n = float(samples_from_stderr(acc, _num(row, "accuracy_stderr")))
    if n is None or not math.isfinite(n):
        return WARN, "no sample count: the interval is unknown"
    lo, hi = wilson(acc, n)
    half = float(hi - lo) / 2
    limit = ctx.checks.accuracy_ci_max
    if half > limit:
        return WARN, f"{n:.0f} samples: ±{half:.3f} > accuracy_ci_max {limit:g}"
    return PASS, f"{n:.0f} samples: ±{half:.3f}"


# --- carbon ------------------------------------------------------------------------------------


@row_rule(
    "carbon.intensity",
    "Green Software Foundation SCI; codecarbon",
    "a CO2e figure without a known intensity and its origin cannot be compared",
)
def carbon_intensity(row, ctx):
    g = _num(row, "intensity_g_per_kwh")
    g = g if g is not None else ctx.grid_intensity
    if g is None:
        return WARN, "no grid intensity: no CO2e"
    if not ctx.carbon_origin:
        return WARN, f"{g:.4g} gCO2e/kWh of unrecorded origin"
    return PASS, f"{g:.4g} gCO2e/kWh, {ctx.carbon_origin}".replace(";", ",")


@row_rule(
    "carbon.embodied",
    "Boavizta (boaviztapi); Green Software Foundation SCI",
    "a carbon total without the hardware's embodied share understates it",
)
def carbon_embodied(row, ctx):
    if ctx.embodied_missing == "":
        return None  # not assessed
    if ctx.embodied_missing:
        return WARN, f"embodied share unknown: {ctx.embodied_missing}".replace(";", ",")
    return PASS, "embodied share estimated (boaviztapi)"


# --- applying them -----------------------------------------------------------------------------


def worst(levels) -> str:
    levels = [lv for lv in levels if lv in _RANK]
    return max(levels, key=_RANK.__getitem__) if levels else PASS


def _rules_text(findings: list[Finding]) -> str:
    """``rule (level: detail); ...`` for the findings that warned or failed, worst first."""
    bad = [f for f in findings if f.level != PASS]
    bad.sort(key=lambda f: -_RANK[f.level])
    return "; ".join(f"{f.rule} ({f.level}: {f.detail})" for f in bad)


@dataclass
class CaseVerdict:
    run_id: str
    case_id: str
    case: str
    workload: str
    check: str
    #: per rule: its worst finding over the case's rows, and on how many rows it was not a pass
    findings: list[tuple[Finding, int]]
    rows: int

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "case_id": self.case_id,
            "case": self.case,
            "workload": self.workload,
            "check": self.check,
            "rows": self.rows,
            "rules": [
                {
                    "rule": f.rule,
                    "level": f.level,
                    "detail": f.detail,
                    "rows_flagged": n,  # rows on which it warned or failed
                    "source": RULE_BY_NAME[f.rule].source,
                }
                for f, n in self.findings
            ],
        }


RULE_BY_NAME = {r.name: r for r in RULES}


def check_frame(frame: pd.DataFrame, ctx: Context) -> tuple[pd.DataFrame, list[CaseVerdict]]:
    """The frame with ``check`` and ``check_rules`` per row, and a verdict per case."""
    frame = frame.copy()
    per_row: dict = {i: [] for i in frame.index}
    verdicts = []
    if frame.empty:
        frame["check"] = pd.Series(dtype=object)
        frame["check_rules"] = pd.Series(dtype=object)
        return frame, verdicts
    keys = frame["case_id"].fillna(frame["case"]).fillna("").astype(str)
    records = frame.to_dict("records")  # once: per case it costs a hundred times more
    index = list(frame.index)
    for case_id, positions in frame.groupby(keys, sort=False).indices.items():
        view = Case([(index[p], records[p]) for p in positions])
        by_rule: dict[str, list[Finding]] = {}
        for rule in RULES:
            for i, f in rule.apply(view, ctx).items():
                per_row[i].append(f)
                by_rule.setdefault(rule.name, []).append(f)
        findings = []
        for fs in by_rule.values():
            top = max(fs, key=lambda f: _RANK[f.level])
            findings.append((top, sum(f.level != PASS for f in fs)))
        first = view.rows[0][1]
        verdicts.append(
            CaseVerdict(
                run_id=_text(first, "run_id"),
                case_id=str(case_id),
                case=_text(first, "case") or str(case_id),
                workload=_text(first, "workload"),
                check=worst(f.level for f, _ in findings),
                findings=findings,
                rows=len(view.rows),
            )
        )
    frame["check"] = [worst(f.level for f in per_row[i]) for i in frame.index]
    frame["check_rules"] = [_rules_text(per_row[i]) or None for i in frame.index]
    return frame, verdicts


def merged(rows: pd.DataFrame) -> tuple[str, str | None]:
    """The verdict over rows: the worst ``check``, and each rule that warned or failed on any of
    them, at its worst, with its first reason (fails first)."""
    seen: dict[str, str] = {}
    for text in rows["check_rules"].dropna():
        for part in _split_rules(text):
            name = part.split(" (", 1)[0]
            if name not in seen or (" (fail:" in part and " (fail:" not in seen[name]):
                seen[name] = part
    ordered = sorted(seen.values(), key=lambda p: " (fail:" not in p)
    return worst(rows["check"]), "; ".join(ordered) or None


def join_setup_checks(setups: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """``setups`` (index model × variant × hardware × energy_method) with ``check`` and
    ``check_rules`` over the ok rows whose figures it shows: its own cases, and the accuracy cases
    of its model × variant × hardware (accuracy is joined across energy methods)."""
    setups = setups.copy()
    if "check" not in frame.columns:
        setups["check"], setups["check_rules"] = None, None
        return setups
    ok = frame[frame["status"] == "ok"]
    method = ok["energy_method"].fillna("unknown")
    checks, rules = [], []
    for model, variant, hardware, em in setups.index:
        same = (ok["model"] == model) & (ok["variant"] == variant) & (ok["hardware"] == hardware)
        mine = ok[same & ((method == em) | ok["workload"].isin(kinds(scores=True)))]
        check, why = merged(mine) if len(mine) else (PASS, None)
        checks.append(check)
        rules.append(why)
    setups["check"], setups["check_rules"] = checks, rules
    return setups


def _split_rules(text: str) -> list[str]:
    """The parts of a ``check_rules`` cell (details never hold ';')."""
    return [p.strip() for p in str(text).split("; ") if p.strip()]


# --- a run -------------------------------------------------------------------------------------


def context(run, accounting=None) -> Context:
    """The rules' context for one run: its suite's checks block, idle.json, the CPU's TDP."""
    from pydantic import ValidationError

    from harness import store
    from harness.errors import HarnessError
    from harness.suite import Checks

    suite = run.suite
    block = suite.get("checks") or {}
    try:
        checks = Checks.model_validate(block)
    except ValidationError as e:  # a manifest edited by hand: one line, as a suite's error
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise HarnessError(
            f"{run.path}/manifest.json: checks{'.' + where if where else ''}: {err.get('msg')}"
        ) from None
    m = suite.get("measurement") or {}
    idle = {}
    try:
        raw = store.read_json(run.path / store.IDLE)
    except (OSError, ValueError):
        raw = {}
    for hw, entry in (raw or {}).items() if isinstance(raw, dict) else []:
        watts = (entry or {}).get("watts") if isinstance(entry, dict) else None
        if isinstance(watts, dict) and isinstance(watts.get("total"), (int, float)):
            idle[hw] = float(watts["total"])
    tdp, tdp_source = _cpu_tdp(run, m)
    carbon = run.manifest.get("carbon")
    origin = carbon.get("origin") if isinstance(carbon, dict) else None
    if origin is None and isinstance(carbon, dict) and carbon.get("intensity_g_per_kwh"):
        origin = "given in the suite"
    try:
        target = float(m.get("target_rel_ci", 0.05))
    except (TypeError, ValueError):
        target = 0.05
    drift = m.get("max_temp_drift_c")
    return Context(
        checks=checks,
        explicit=set(checks.model_fields_set),
        idle_w=idle,
        cpu_tdp_w=tdp,
        cpu_tdp_source=tdp_source,
        target_rel_ci=target,
        measurement_drift_c=float(drift) if isinstance(drift, (int, float)) else None,
        carbon_origin=origin,
        embodied_missing=(accounting.missing or None) if accounting is not None else "",
    )


def _cpu_tdp(run, measurement: dict) -> tuple[float | None, str]:
    """The CPU's TDP for the machine: the suite's tdp_w, else codecarbon's table for the CPU the
    rows name, times the sockets the manifest's sensors list (RAPL cpu:N)."""
    given = measurement.get("tdp_w")
    if isinstance(given, (int, float)) and given > 0:
        return float(given), "tdp_w"
    names = run.frame.loc[run.frame["device"].fillna("cpu") == "cpu", "device_name"].dropna()
    if names.empty:
        return None, ""
    from harness.sensors.estimate import lookup_tdp

    found = lookup_tdp(str(names.iloc[0]))
    if not found:
        return None, ""
    sockets = {
        s.get("domain")
        for s in run.manifest.get("sensors") or []
        if isinstance(s, dict) and re.fullmatch(r"cpu:\d+", str(s.get("domain")))
    }
    n = max(len(sockets), 1)
    return found[0] * n, f"codecarbon's CPU table ({found[1]}) × {n} socket(s)"


def check_run(run, accounting=None, grid=None) -> list[CaseVerdict]:
    """Apply the rules to a run (``harness.report.load.Run``): its frame gains ``check`` and
    ``check_rules`` (in place); returns a verdict per case. ``accounting``: the run's embodied
    accounting (harness.carbon.boundary), ``grid``: the intensity the report prices CO2e at and
    where it came from (harness.report.tables.Grid)."""
    if accounting is None:
        from harness.carbon.boundary import account

        accounting = account(run.manifest, run.frame.copy(), run.carbon_block)
    ctx = context(run, accounting)
    if grid is not None and grid.known:
        ctx.grid_intensity = grid.intensity_g_per_kwh
        ctx.carbon_origin = ctx.carbon_origin or grid.source
    checked, verdicts = check_frame(run.frame, ctx)
    # in place (callers hold this frame); a frame built column by column is fragmented, and two
    # more columns on it are cheap: pandas' PerformanceWarning would only reach the user's stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        run.frame["check"] = checked["check"]
        run.frame["check_rules"] = checked["check_rules"]
    return verdicts


def counts(verdicts: list[CaseVerdict]) -> dict[str, int]:
    return {lv: sum(v.check == lv for v in verdicts) for lv in LEVELS}


def summary_line(verdicts: list[CaseVerdict]) -> str:
    """``checks: 25 pass, 2 warn, 0 fail (of 27 cases; harness check)``"""
    n = counts(verdicts)
    return (
        f"checks: {n[PASS]} pass, {n[WARN]} warn, {n[FAIL]} fail "
        f"(of {len(verdicts)} cases; `harness check`, docs/methodology.md)"
    )


def keep_published(board: pd.DataFrame, include_failed: bool) -> tuple[pd.DataFrame, int]:
    """A board without its failed rows (unless ``include_failed``), and how many were left off."""
    if include_failed or "check" not in board.columns:
        return board, 0
    failed = board["check"] == FAIL
    return board[~failed].reset_index(drop=True), int(failed.sum())
