"""What a smaller model costs to make, what it saves per query, and when it pays back.

``produce_j`` of a setup (model × variant × hardware) is the energy of the cases that made it: the
train, distill or finetune case that made its model's checkpoint, plus, for a quantised or pruned
variant, the window in which the variant was made on load (``produce_variant_j``, the median over
the setup's cases: each made the same variant once). A distilled student's teacher, or a
fine-tune's source model, is not part of it: that making is shown apart (``upstream_produce_j``),
because the teacher was made anyway, for its own use.

The techniques table sets each derived setup against its source: a quantised or pruned variant
against the unmodified variant of the same model, a distilled student against its teacher, a
fine-tune against the model it started from, at a shape both measured (:mod:`harness.report.shapes`;
none shared: no figure). Break-even is the number of queries after which the setup that is
cheaper to run has paid back its extra making cost: the technique's own making energy ÷ the
energy per query it saves, computed only where a saving is measured (:func:`saving_of`), never for
a technique that does the same work per query (:func:`same_work`). Intervals of ratios are
conservative (low ÷ high, high ÷ low of the two 95% intervals).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.records import J_PER_KWH
from harness.report.figure import Figure
from harness.report.tables import SETUP, Tables, from_scratch
from harness.workloads import model_makers, trait

#: the answer sentence's "accurate enough" when the suite does not say (accuracy points)
DEFAULT_TOLERANCE = 0.05
TECHNIQUE_COLUMNS = [
    "technique",
    "setup",
    "source",
    "energy_method",
    "shape",
    "same_work",
    "saving",
    "accuracy",
    "source_accuracy",
    "accuracy_tasks",
    "accuracy_retained_pct",
    "accuracy_retained_pct_ci_low",
    "accuracy_retained_pct_ci_high",
    "params_pct",
    "size_pct",
    "tokens_per_s_pct",
    "tokens_per_s_pct_ci_low",
    "tokens_per_s_pct_ci_high",
    "energy_per_query_pct",
    "energy_per_query_pct_ci_low",
    "energy_per_query_pct_ci_high",
    "energy_per_query_saved_pct",
    "technique_j",
    "technique_j_ci_low",
    "technique_j_ci_high",
    "produce_j",
    "break_even_queries",
    "break_even_queries_ci_low",
    "break_even_queries_ci_high",
    "note",
]
#: a J/query change past this share, where the technique does the same work, is doubted
SAME_WORK_TOLERANCE = 0.15
#: the ``saving`` of a comparison (:func:`saving_of`); and of a technique that does the same work
SAVES, COSTS_MORE, NO_SAVING, UNKNOWN = "saves", "costs more", "no saving measured", "unknown"
SAME_WORK, NO_SHAPE = "same work", "no shape both measured"
PRODUCE_COLUMNS = [
    "produce_j",
    "produce_j_ci_low",
    "produce_j_ci_high",
    "produced_from",
    "upstream_produce_j",
    "upstream_from",
    "energy_lifetime_produced_j",
    "energy_lifetime_produced_kwh",
    "co2e_lifetime_produced_g",
]
FORECAST_COLUMNS = [
    "case",
    "workload",
    "energy_method",
    "forecast_after_steps",
    "steps",
    "forecast_j",
    "forecast_j_ci_low",
    "forecast_j_ci_high",
    "energy_j",
    "forecast_error_pct",
    "actual_inside_interval",
    "forecast_s",
    "forecast_s_ci_low",
    "forecast_s_ci_high",
    "duration_s",
    "forecast_s_error_pct",
]


def _first(series: pd.Series):
    found = series.dropna()
    return found.iloc[0] if len(found) else None


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def makers_of(tables: Tables) -> pd.DataFrame:
    """:func:`making_cases` of the run of ``tables``, built once per report and kept with them."""
    found = getattr(tables, "_makers", None)
    if found is None:
        found = making_cases(tables.run.frame)
        tables._makers = found
    return found


def making_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok train/distill/finetune case: what it made, from what, at what energy.

    ``energy_j`` is the whole case (the sum over its chunks); its interval is that of the mean
    chunk times the number of chunks, as the summary's ``energy_to_train_j``.
    """
    ok = frame[(frame["status"] == "ok") & frame["workload"].isin(model_makers())]
    rows = []
    for cid, g in ok.groupby("case_id", sort=False):
        from harness.report.stats import describe

        stats = describe(g["energy_j"].dropna().astype(float))
        n = int(g["energy_j"].notna().sum())
        row = {
            "case_id": cid,
            "case": _first(g["case"]),
            "workload": _first(g["workload"]),
            "model": _first(g["model"]),
            "model_source": _first(g["model_source"]),
            "variant": _first(g["variant"]),
            "hardware": _first(g["hardware"]),
            "energy_method": _first(g["energy_method"]) or "unknown",
            "task": _first(g["task"]),
            "teacher": _first(g["teacher"]) if "teacher" in g else None,
            "finetuned_from": _first(g["finetuned_from"]) if "finetuned_from" in g else None,
            "energy_j": float(g["energy_j"].sum()),
            "energy_j_ci_low": n * stats["ci_low"] if n > 1 else math.nan,
            "energy_j_ci_high": n * stats["ci_high"] if n > 1 else math.nan,
            "duration_s": float(g["duration_s"].sum()),
            "steps": float(g["steps"].sum()),
        }
        for col in (
            "forecast_after_steps",
            "forecast_j",
            "forecast_j_ci_low",
            "forecast_j_ci_high",
            "forecast_s",
            "forecast_s_ci_low",
            "forecast_s_ci_high",
        ):
            row[col] = _first(g[col]) if col in g else None
        rows.append(row)
    return pd.DataFrame(rows)


def forecast_table(makers: pd.DataFrame) -> pd.DataFrame:
    """Each training case's forecast set against what it then used."""
    if makers.empty or makers["forecast_j"].isna().all():
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    f = makers[makers["forecast_j"].notna()].copy()
    f["forecast_error_pct"] = 100 * (f["forecast_j"] - f["energy_j"]) / f["energy_j"]
    f["forecast_s_error_pct"] = 100 * (f["forecast_s"] - f["duration_s"]) / f["duration_s"]
    f["actual_inside_interval"] = (f["energy_j"] >= f["forecast_j_ci_low"]) & (
        f["energy_j"] <= f["forecast_j_ci_high"]
    )
    return f[FORECAST_COLUMNS].reset_index(drop=True)


def _variant_making(frame: pd.DataFrame) -> pd.Series:
    """Median ``produce_variant_j`` per setup (the energy of making a variant on load)."""
    if "produce_variant_j" not in frame.columns:
        return pd.Series(dtype=float)
    ok = frame[(frame["status"] == "ok") & frame["produce_variant_j"].notna()].copy()
    ok["energy_method"] = ok["energy_method"].fillna("unknown")
    if ok.empty:
        return pd.Series(dtype=float)
    per_case = ok.groupby(["case_id", *SETUP], sort=False)["produce_variant_j"].first()
    return per_case.groupby(level=SETUP).median()


def _is_derived(setup: pd.Series) -> bool:
    quant = setup.get("quantization")
    prune = setup.get("prune")
    return (isinstance(quant, str) and bool(quant)) or (prune is not None and pd.notna(prune))


def _variant_label(setup: pd.Series) -> str:
    parts = []
    prune = setup.get("prune")
    if prune is not None and pd.notna(prune):
        parts.append(f"prune {float(prune):g} {setup.get('prune_method') or 'magnitude'}")
    quant = setup.get("quantization")
    if isinstance(quant, str) and quant:
        parts.append(quant)
    return " + ".join(parts)


def _maker_of(makers: pd.DataFrame, model: str, hardware: str, method: str) -> pd.Series | None:
    """The case that made ``model`` (on the same hardware and energy method when there is one)."""
    if makers.empty:
        return None
    m = makers[makers["model"] == model]
    if m.empty:
        return None
    same = m[(m["hardware"] == hardware) & (m["energy_method"] == method)]
    return (same if not same.empty else m).iloc[-1]


def _setup_facts(tables: Tables) -> pd.DataFrame:
    """The setups with the per-variant facts (prune) that the summary does not carry."""
    s = tables.setups.copy()
    frame = tables.run.frame
    for col in ("prune", "prune_method", "params_stored"):
        if col in frame.columns:
            ok = frame[frame["model"].notna()].copy()
            ok["energy_method"] = ok["energy_method"].fillna("unknown")
            by = ok.groupby(SETUP, sort=False)[col].agg(_first)
            s[col] = by.reindex(s.index)
        else:
            s[col] = None
    return s


def add_produce(tables: Tables) -> pd.DataFrame:
    """``produce_j`` (with interval), ``produced_from``, the upstream making shown apart, and the
    lifetime with the making: ``produce_j`` + ``queries_lifetime`` × energy per query."""
    s = _setup_facts(tables)
    makers = makers_of(tables)
    variant_j = _variant_making(tables.run.frame)
    produce, low, high, origin, up_j, up_from = [], [], [], [], [], []
    for key, row in s.iterrows():
        model, variant, hardware, method = key
        maker = _maker_of(makers, model, hardware, method)
        derived = _is_derived(row)
        extra = float(variant_j.get(key, math.nan)) if derived else 0.0
        if maker is None:
            # a model not made in this run (hf:, path:, an untrained builtin): what this run spent
            # making it is the variant's making on load, where there is one; else unknown
            produce.append(extra if derived else math.nan)
            low.append(extra if derived else math.nan)
            high.append(extra if derived else math.nan)
            made = derived and pd.notna(extra)
            origin.append(
                f"{_variant_label(row)} on load (the model itself not made in this run)"
                if made
                else None
            )
            up_j.append(math.nan)
            up_from.append(None)
            continue
        e, lo, hi = maker["energy_j"], maker["energy_j_ci_low"], maker["energy_j_ci_high"]
        produce.append(e + extra)
        low.append(lo + extra)
        high.append(hi + extra)
        text = f"{maker['workload']} {maker['case']}"
        source = _text(maker.get("teacher")) or _text(maker.get("finetuned_from"))
        source_word = trait(maker["workload"], "source_word")
        if source_word and source:
            text += f" ({source_word} {source})"
        if derived:
            text += f"; {_variant_label(row)} on load"
        origin.append(text)
        upstream = _maker_of(makers, source, hardware, method) if source else None
        up_j.append(upstream["energy_j"] if upstream is not None else math.nan)
        up_from.append(
            f"{upstream['workload']} {upstream['case']}" if upstream is not None else None
        )
    from harness.report.shapes import Shapes

    s["shape"] = [Shapes.of(tables).headline(key) for key in s.index]
    s["produce_j"] = produce
    s["produce_j_ci_low"] = low
    s["produce_j_ci_high"] = high
    s["produced_from"] = origin
    s["upstream_produce_j"] = up_j
    s["upstream_from"] = up_from
    queries = tables.run.queries_lifetime
    s["energy_lifetime_produced_j"] = s["produce_j"] + queries * s["energy_per_query_j"]
    s["energy_lifetime_produced_kwh"] = s["energy_lifetime_produced_j"] / J_PER_KWH
    s["co2e_lifetime_produced_g"] = tables.grid.co2e_g(s["energy_lifetime_produced_j"])
    return s


# --- techniques --------------------------------------------------------------------------------


def _acc_pair(s: pd.DataFrame, a, b, tasks: list[str]) -> tuple[float, float, float, float, str]:
    """Accuracy of ``a`` and ``b`` over the tasks both were measured on, with their bounds."""
    common = [
        t
        for t in tasks
        if pd.notna(s.at[a, f"accuracy_{t}"]) and pd.notna(s.at[b, f"accuracy_{t}"])
    ]
    if not common:
        return math.nan, math.nan, math.nan, math.nan, ""

    def mean(key, suffix=""):
        return float(np.mean([s.at[key, f"accuracy_{t}{suffix}"] for t in common]))

    return (
        mean(a),
        mean(b),
        mean(a, "_ci_low") / mean(b, "_ci_high") if mean(b, "_ci_high") > 0 else math.nan,
        mean(a, "_ci_high") / mean(b, "_ci_low") if mean(b, "_ci_low") > 0 else math.inf,
        ";".join(common),
    )


def _pct(a, b) -> float:
    try:
        return 100.0 * float(a) / float(b) if float(b) > 0 else math.nan
    except (TypeError, ValueError):
        return math.nan


def _source_of(s: pd.DataFrame, key, makers: pd.DataFrame) -> tuple[tuple | None, str | None]:
    """The setup a derived setup is set against, and the technique's name."""
    model, variant, hardware, method = key
    row = s.loc[key]
    if _is_derived(row):
        plain = [
            k
            for k in s.index
            if k[0] == model and k[2] == hardware and k[3] == method and not _is_derived(s.loc[k])
        ]
        same_dtype = [k for k in plain if s.at[k, "dtype"] == row.get("dtype")]
        pick = (same_dtype or plain or [None])[0]
        return pick, _variant_label(row)
    maker = _maker_of(makers, model, hardware, method)
    if maker is None or not trait(maker["workload"], "derives"):
        return None, None
    origin = _text(maker.get("teacher")) or _text(maker.get("finetuned_from"))
    cands = [k for k in s.index if k[0] == origin and k[2] == hardware and k[3] == method]
    same = [k for k in cands if k[1] == variant]
    pick = (same or cands or [None])[0]
    return pick, str(maker["workload"])


def _magnitude_pruned(setup: pd.Series) -> bool:
    prune = setup.get("prune")
    return prune is not None and pd.notna(prune) and setup.get("prune_method") != "neurons"


def same_work(setup: pd.Series, technique: str | None) -> bool:
    """Whether the technique leaves the work per query as it was: magnitude pruning (its zeros
    stay in dense tensors; not combined with a quantisation) and a fine-tune against the model it
    started from (the same network, other weights). Its J/query may move with the machine's other
    load, never by the technique: no saving is counted and no break-even computed."""
    quant = setup.get("quantization")
    if trait(technique, "same_network", False):
        return True
    return _magnitude_pruned(setup) and not (isinstance(quant, str) and quant)


def params_of_work(setup: pd.Series) -> float:
    """The parameters a query works through: a magnitude-pruned model's stored count (its
    ``params`` counts nonzeros, but the zeros are multiplied all the same)."""
    stored = setup.get("params_stored")
    if _magnitude_pruned(setup) and stored is not None and pd.notna(stored):
        return float(stored)
    return setup.get("params")


@dataclass
class Saving:
    """Energy per query of a setup against another at one shape: what is saved, its interval."""

    verdict: str  # SAVES | COSTS_MORE | NO_SAVING | UNKNOWN
    saved_j: float
    saved_j_ci_low: float
    saved_j_ci_high: float
    pct: float  # the setup's J/query as a % of the other's
    pct_ci_low: float
    pct_ci_high: float

    @property
    def saved_pct(self) -> float:
        return 100 - self.pct

    @property
    def saved_pct_ci_low(self) -> float:
        return 100 - self.pct_ci_high

    @property
    def saved_pct_ci_high(self) -> float:
        return 100 - self.pct_ci_low


def saving_of(mine: pd.Series, other: pd.Series) -> Saving:
    """What ``mine`` saves per query against ``other`` (each :meth:`Shapes.at` of one shape).

    A saving counts only where the interval of the difference leaves out zero (the intervals are
    combined conservatively: the other's low end less my high end, and the other way round);
    inside it: no saving measured. Without an interval (one repetition) it is unknown.
    """
    e, lo, hi = (mine.get(f"energy_per_query_j{x}") for x in ("", "_ci_low", "_ci_high"))
    o, olo, ohi = (other.get(f"energy_per_query_j{x}") for x in ("", "_ci_low", "_ci_high"))
    saved = o - e if pd.notna(e) and pd.notna(o) else math.nan
    s_lo, s_hi = olo - hi, ohi - lo
    if not (pd.notna(saved) and pd.notna(s_lo) and pd.notna(s_hi)):
        verdict = UNKNOWN
    elif s_lo > 0:
        verdict = SAVES
    elif s_hi < 0:
        verdict = COSTS_MORE
    else:
        verdict = NO_SAVING
    return Saving(verdict, saved, s_lo, s_hi, _pct(e, o), _pct(lo, ohi), _pct(hi, olo))


def _doubt(setup: pd.Series, epq, epq_src) -> str | None:
    """A warning where a figure contradicts what the technique does (never a silent figure)."""
    if not _magnitude_pruned(setup):
        return None
    quant = setup.get("quantization")
    if isinstance(quant, str) and quant:
        return None
    if pd.notna(epq) and pd.notna(epq_src) and epq_src > 0:
        if abs(epq / epq_src - 1) > SAME_WORK_TOLERANCE:
            return (
                f"its J/query moved {100 * (epq / epq_src - 1):+.0f}% all the same: the machine's "
                "other load between cases, not the technique"
            )
    return None


def _break_even(own: tuple[float, float, float], saving: Saving) -> tuple[str, list[float], str]:
    """The verdict, break-even queries (value, low, high) and why, from the making and saving.

    Break-even is computed only from a saving measured (its interval leaves out zero): never
    where the setup costs more per query; unknown where the making or an interval is missing.
    """
    nan3 = [math.nan] * 3
    if saving.verdict == COSTS_MORE:
        return COSTS_MORE, [math.inf] * 3, ""
    if saving.verdict == NO_SAVING:
        return NO_SAVING, nan3, "the J/query difference is inside its 95% interval"
    if saving.verdict == UNKNOWN:
        return UNKNOWN, nan3, "break-even unknown: no J/query interval on one side"
    j, j_lo, j_hi = own
    if not (pd.notna(j) and pd.notna(j_lo) and pd.notna(j_hi)):
        return SAVES, nan3, "break-even unknown: the technique's making energy was not recorded"
    # fewest queries: cheapest making, largest saving; most: the other way round
    return (
        SAVES,
        [j / saving.saved_j, j_lo / saving.saved_j_ci_high, j_hi / saving.saved_j_ci_low],
        "",
    )


def techniques_table(tables: Tables, produced: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each derived setup against its source (see the module's docstring), at a shape both
    measured (:mod:`harness.report.shapes`)."""
    from harness.report.shapes import Shapes

    s = produced if produced is not None else add_produce(tables)
    makers = makers_of(tables)
    variant_j = _variant_making(tables.run.frame)
    shapes = Shapes.of(tables)
    rows = []
    for key in s.index:
        source, technique = _source_of(s, key, makers)
        if source is None or technique is None:
            continue
        r, src = s.loc[key], s.loc[source]
        acc, acc_src, ret_lo, ret_hi, common = _acc_pair(s, key, source, tables.tasks)
        if _is_derived(r):
            j = float(variant_j.get(key, math.nan))  # the variant's making on load
            own = (j, j, j)
        else:
            maker = _maker_of(makers, key[0], key[2], key[3])
            own = (maker["energy_j"], maker["energy_j_ci_low"], maker["energy_j_ci_high"])
        shape = shapes.shared([key, source])
        mine, theirs = shapes.at(key, shape), shapes.at(source, shape)
        saving = saving_of(mine, theirs)
        work = same_work(r, technique)
        notes = []
        if shape is None:
            verdict, be = NO_SHAPE, [math.nan] * 3
            notes.append(shapes.no_shared([key, source]) + ": no J/query or throughput figure")
        elif work:
            verdict, be = SAME_WORK, [math.nan] * 3
            what = (
                f"a {trait(technique, 'derives')} model runs the same network as its source"
                if trait(technique, "same_network", False)
                else "magnitude pruning keeps the dense shapes, its zeros multiplied all the same"
            )
            notes.append(f"same work per query ({what}): no saving counted, no break-even")
        else:
            verdict, be, why = _break_even(own, saving)
            if why:
                notes.append(why)
        doubt = _doubt(r, mine["energy_per_query_j"], theirs["energy_per_query_j"])
        if doubt:
            notes.append(doubt)
        rows.append(
            {
                "technique": technique,
                "setup": "/".join(key[:3]),
                "source": "/".join(source[:3]),
                "energy_method": key[3],
                "shape": shape.label if shape is not None else None,
                "same_work": work,
                "saving": verdict,
                "accuracy": acc,
                "source_accuracy": acc_src,
                "accuracy_tasks": common,
                "accuracy_retained_pct": _pct(acc, acc_src),
                "accuracy_retained_pct_ci_low": 100 * ret_lo,
                "accuracy_retained_pct_ci_high": 100 * ret_hi,
                "params_pct": _pct(params_of_work(r), params_of_work(src)),
                "size_pct": _pct(r.get("model_size_mb"), src.get("model_size_mb")),
                "tokens_per_s_pct": _pct(mine["tokens_per_s"], theirs["tokens_per_s"]),
                "tokens_per_s_pct_ci_low": _pct(
                    mine["tokens_per_s_ci_low"], theirs["tokens_per_s_ci_high"]
                ),
                "tokens_per_s_pct_ci_high": _pct(
                    mine["tokens_per_s_ci_high"], theirs["tokens_per_s_ci_low"]
                ),
                "energy_per_query_pct": saving.pct,
                "energy_per_query_pct_ci_low": saving.pct_ci_low,
                "energy_per_query_pct_ci_high": saving.pct_ci_high,
                "energy_per_query_saved_pct": math.nan if work else saving.saved_pct,
                "technique_j": own[0],
                "technique_j_ci_low": own[1],
                "technique_j_ci_high": own[2],
                "produce_j": r["produce_j"],
                "break_even_queries": be[0],
                "break_even_queries_ci_low": be[1],
                "break_even_queries_ci_high": be[2],
                "note": "; ".join(notes) or None,
            }
        )
    return pd.DataFrame(rows, columns=TECHNIQUE_COLUMNS)


@dataclass
class Comparison:
    """A setup made one way against the same size made another (distilled vs from scratch)."""

    what: str
    setup: str
    other: str
    difference: float  # accuracy points, setup - other
    low: float
    high: float
    tasks: str
    produce_j: float
    other_produce_j: float

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.low) or not math.isfinite(self.high):
            return "cannot tell (no interval)"
        if self.low > 0:
            return "it beats the other"
        if self.high < 0:
            return "it is worse than the other"
        return "no difference the intervals can tell"


def scratch_comparisons(tables: Tables, produced: pd.DataFrame) -> list[Comparison]:
    """Distilled students against the same source trained from scratch; fine-tunes against the
    same source trained from scratch on the task."""
    s = produced
    makers = makers_of(tables)
    out = []
    for key in s.index:
        maker = _maker_of(makers, key[0], key[2], key[3])
        if maker is None or not trait(maker["workload"], "derives") or _is_derived(s.loc[key]):
            continue
        # a fine-tune's model learnt its task: set against one trained from scratch on it
        task = maker["task"] if trait(maker["workload"], "same_network") else None
        scratch = makers[
            makers["workload"].isin(from_scratch())
            & (makers["model_source"] == maker["model_source"])
            & (makers["hardware"] == key[2])
            & (makers["model"] != key[0])
        ]
        scratch = scratch[scratch["task"] == task] if task else scratch[scratch["task"].isna()]
        others = [(m, key[1], key[2], key[3]) for m in scratch["model"]]
        others = [o for o in others if o in s.index]
        if not others:
            continue
        other = others[0]
        common = [
            t
            for t in tables.tasks
            if pd.notna(s.at[key, f"accuracy_{t}"]) and pd.notna(s.at[other, f"accuracy_{t}"])
        ]
        if not common:
            continue
        diffs, halves = [], []
        for t in common:
            a, b = s.at[key, f"accuracy_{t}"], s.at[other, f"accuracy_{t}"]
            ha = (s.at[key, f"accuracy_{t}_ci_high"] - s.at[key, f"accuracy_{t}_ci_low"]) / 2
            hb = (s.at[other, f"accuracy_{t}_ci_high"] - s.at[other, f"accuracy_{t}_ci_low"]) / 2
            diffs.append(a - b)
            halves.append(math.hypot(ha, hb))  # independent samples: half-widths add in squares
        d = float(np.mean(diffs))
        # the mean of the tasks' differences, its half-width the mean of theirs (conservative)
        h = float(np.mean(halves))
        what = trait(maker["workload"], "derives") + (f" on {task}" if task else "")
        out.append(
            Comparison(
                what,
                "/".join(key[:3]),
                "/".join(other[:3]),
                d,
                d - h,
                d + h,
                ";".join(common),
                s.at[key, "produce_j"],
                s.at[other, "produce_j"],
            )
        )
    return out


# --- the answer -------------------------------------------------------------------------------


def _label(row) -> str:
    return f"{row['model']}/{row['variant']}/{row['hardware']}"


def _half(row) -> float:
    lo, hi = row.get("accuracy_ci_low"), row.get("accuracy_ci_high")
    return (hi - lo) / 2 if pd.notna(lo) and pd.notna(hi) else math.nan


def within_tolerance(row, best, tolerance: float) -> str:
    """Whether ``row``'s accuracy is within ``tolerance`` of ``best``'s: ``yes``, ``no`` or
    ``cannot be told apart`` (the 95% interval of the difference reaches over the threshold).

    The two accuracies are measured on separate samples, so the half-widths of their intervals
    add in squares. Without intervals the point estimates decide.
    """
    if _label(row) == _label(best):
        return "yes"
    d = best["accuracy"] - row["accuracy"]
    h = math.hypot(_half(row), _half(best))
    if not math.isfinite(h):
        return "yes" if d <= tolerance else "no"
    if d + h <= tolerance:
        return "yes"
    if d - h > tolerance:
        return "no"
    return "cannot be told apart"


def _acc_text(row) -> str:
    lo, hi = row.get("accuracy_ci_low"), row.get("accuracy_ci_high")
    if pd.notna(lo) and pd.notna(hi):
        return f"{row['accuracy']:.3f} ({lo:.3f}–{hi:.3f})"
    return f"{row['accuracy']:.3f}"


def _per_query_text(saving: Saving) -> str:
    """``saves 40% energy per query (95% interval 37% to 43% saved)``, or what it costs more, or
    that the saving is inside its interval."""
    mid, lo, hi = saving.saved_pct, saving.saved_pct_ci_low, saving.saved_pct_ci_high
    if not math.isfinite(lo) or not math.isfinite(hi):
        return f"{_saves(mid)} energy per query (no interval)"
    if saving.verdict == NO_SAVING:
        less = f"{_signed(mid)} less" if mid >= 0 else f"{_signed(-mid)} more"
        return (
            f"uses energy per query that cannot be told from the full-size's ({less}, 95% "
            f"interval {_signed(lo)} to {_signed(hi)} saved: no saving measured)"
        )
    if mid >= 0:
        return f"{_saves(mid)} energy per query (95% interval {_signed(lo)} to {_signed(hi)} saved)"
    return f"{_saves(mid)} energy per query (95% interval {_signed(-hi)} to {_signed(-lo)} more)"


def _number(value: float) -> str:
    """``0.0179`` or ``−0.00531`` (the minus sign of the sentence's other figures)."""
    return f"{value:.3g}".replace("-", "−")


def _signed(value: float) -> str:
    size = abs(value)
    text = f"{size:.0f}%" if size >= 10 else f"{size:.2g}%"
    return text if value >= 0 else f"−{text}"


def answer(tables: Tables, produced: pd.DataFrame, tolerance: float) -> str | None:
    """One sentence: the smallest setup within ``tolerance`` of the best accuracy, and what it
    saves against the full-size setup (the most accurate plain variant of the largest model), at a
    shape both measured (:mod:`harness.report.shapes`), with 95% intervals.

    Accuracy means over different task sets do not compare, so the setups measured on every task
    of the run are the candidates when there are any. "Smallest" is by bytes of weights, then by
    the parameters a query works through (:func:`params_of_work`: a magnitude-pruned model counts
    its zeros), so a setup doing the same work as the full-size one is never the smaller. Whether a
    setup is within the tolerance is judged on the point estimates, and where the interval of the
    difference reaches over the threshold the sentence says it cannot be told apart. Making
    includes a teacher's or source's own training on both sides: deploying the small setup needs
    it made.
    """
    from harness.report.shapes import Shapes

    scored = produced.reset_index()
    scored = scored[scored["accuracy"].notna()]
    every = ";".join(tables.tasks)
    if (scored["accuracy_tasks"] == every).any():
        scored = scored[scored["accuracy_tasks"] == every]
    s = scored[scored["energy_per_query_j"].notna()].copy()
    if s.empty:
        return None
    s["_work"] = s.apply(params_of_work, axis=1).astype(float)
    best = s.loc[s["accuracy"].idxmax()]
    near = s[s["accuracy"] >= best["accuracy"] - tolerance]
    by_size = ["model_size_mb", "_work", "accuracy"]
    small = near.sort_values(by_size, ascending=[True, True, False], kind="stable").iloc[0]
    # setups as accurate and smaller that the answer cannot weigh (a served one's energy is per
    # request at a concurrency, in Serving): named, so that "no smaller setup" is never said of them
    unpriced = scored[
        scored["energy_per_query_j"].isna()
        & (scored["accuracy"] >= best["accuracy"] - tolerance)
        & (scored["model_size_mb"] < small["model_size_mb"])
    ].sort_values("model_size_mb", kind="stable")
    names = ", ".join(_label(r) for _, r in unpriced.iterrows())
    aside = (
        f" {names} {'is' if len(unpriced) == 1 else 'are'} as accurate and smaller, but "
        f"{'has' if len(unpriced) == 1 else 'have'} no energy per query in this run to weigh "
        "(a served setup's energy is per request: see Serving)."
        if names
        else ""
    )
    plain = s[~s.apply(_is_derived, axis=1)]
    plain = plain if not plain.empty else s
    largest = plain[plain["params"] == plain["params"].max()]
    full = largest.loc[largest["accuracy"].idxmax()]
    if (small["model_size_mb"], small["_work"]) >= (full["model_size_mb"], full["_work"]):
        small = full  # the same size, the same work: not a smaller setup
    # smaller setups whose distance to the best the intervals cannot place on either side
    smaller = s[
        (s["model_size_mb"] < small["model_size_mb"])
        | ((s["model_size_mb"] == small["model_size_mb"]) & (s["_work"] < small["_work"]))
    ]
    unsure = [
        _label(r)
        for _, r in smaller.sort_values(by_size, kind="stable").iterrows()
        if within_tolerance(r, best, tolerance) == "cannot be told apart"
    ]
    n = tables.run.queries_lifetime
    method = (
        "estimated"
        if "estimated" in (small["energy_method"], full["energy_method"])
        else "measured"
    )
    head = (
        f"**Answer:** the smallest setup within {tolerance:.2f} of the best accuracy "
        f"({best['accuracy']:.3f}, {_label(best)}) is {_label(small)} "
        f"(accuracy {small['accuracy']:.3f})"
    )
    tail = _accuracy_doubt(small, best, tolerance, unsure) + aside
    if _label(small) == _label(full):
        among = " with an energy per query" if names else ""
        return (
            f"{head}, the full-size setup itself: no smaller setup of this run{among} is "
            f"accurate enough (energy {method}).{tail}"
        )

    def making(row) -> float:
        up = row.get("upstream_produce_j")
        return row["produce_j"] + (up if pd.notna(up) else 0.0)

    make_s, make_f = making(small), making(full)
    make_saved = 100 * (1 - make_s / make_f) if pd.notna(make_s) and make_f > 0 else math.nan
    make_text = (
        f"{_saves(make_saved)} to make (with its teacher's or source's making)"
        if math.isfinite(make_saved)
        else "an unknown share to make (not made in this run)"
    )
    against = f"against the full-size {_label(full)} (accuracy {full['accuracy']:.3f})"
    shapes = Shapes.of(tables)
    keys = [tuple(small[c] for c in SETUP), tuple(full[c] for c in SETUP)]
    shape = shapes.shared(keys)
    if shape is None:
        return (
            f"{head}; {against} no energy per query is compared, {shapes.no_shared(keys)}; it "
            f"{make_text} (energy {method}).{tail}"
        )
    saving = saving_of(shapes.at(keys[0], shape), shapes.at(keys[1], shape))
    per_query = _per_query_text(saving)
    life_j = [saving.saved_j * n, saving.saved_j_ci_low * n, saving.saved_j_ci_high * n]
    if pd.notna(make_s) and pd.notna(make_f):
        life_j = [x + make_f - make_s for x in life_j]
    kwh = [x / J_PER_KWH for x in life_j]
    co2 = tables.grid.co2e_g(life_j[0]) if tables.grid.known else math.nan
    co2_text = f" and {abs(co2):.3g} gCO2e" if math.isfinite(co2) else ""
    verb = "saves" if kwh[0] >= 0 else "costs"
    life_range = (
        f" (95% interval {_number(kwh[1])} to {_number(kwh[2])} kWh saved)"
        if math.isfinite(kwh[1]) and math.isfinite(kwh[2])
        else ""
    )
    return (
        f"{head}; {against}, both at {shape.label}, it {per_query} and {make_text}; over "
        f"{n:,} queries it {verb} {abs(kwh[0]):.3g} kWh{life_range}{co2_text}"
        f"{'' if verb == 'saves' else ' more'} (energy {method}).{tail}"
    )


def _accuracy_doubt(small, best, tolerance: float, unsure: list[str]) -> str:
    """The sentences that say where the accuracy intervals cannot place a setup."""
    out = ""
    if within_tolerance(small, best, tolerance) == "cannot be told apart":
        out += (
            f" Whether {_label(small)} is within {tolerance:.2f} of the best cannot be told apart "
            f"at these sample sizes: accuracy {_acc_text(small)} against {_acc_text(best)} "
            "(95% intervals)."
        )
    if unsure:
        out += (
            f" Smaller, and whether within {tolerance:.2f} of the best cannot be told apart: "
            + ", ".join(unsure)
            + "."
        )
    return out


def _saves(value: float) -> str:
    """'saves 49%' or 'costs 12% more'."""
    size = abs(value)
    text = f"{size:.0f}%" if size >= 10 else f"{size:.2g}%"
    return f"saves {text}" if value >= 0 else f"costs {text} more"


# --- markdown ---------------------------------------------------------------------------------


def _fmt_range(mid, lo, hi, digits: int = 3) -> str:
    from harness.report.markdown import fmt

    m = fmt(mid, digits)
    if not m:
        return ""
    if pd.notna(lo) and pd.notna(hi):
        hi_text = "∞" if isinstance(hi, float) and math.isinf(hi) else fmt(hi, digits)
        lo_text = "∞" if isinstance(lo, float) and math.isinf(lo) else fmt(lo, digits)
        return f"{m} ({lo_text}–{hi_text})"
    return m


def break_even_text(r: dict) -> str:
    """The break-even cell of a techniques row: queries with interval, or why there is none."""
    verdict = r["saving"]
    if verdict == SAVES and pd.notna(r["break_even_queries"]):
        lo, hi = r["break_even_queries_ci_low"], r["break_even_queries_ci_high"]
        return _fmt_range(r["break_even_queries"], lo, hi)
    return {COSTS_MORE: "never", SAVES: UNKNOWN}.get(verdict, verdict)


def techniques_section(tech: pd.DataFrame, comparisons: list[Comparison]) -> str:
    from harness.report.markdown import fmt, table

    if tech.empty and not comparisons:
        return ""
    rows = []
    for r in tech.to_dict("records"):
        same = " (same work)" if r["same_work"] else ""
        rows.append(
            {
                "t": r["technique"],
                "setup": r["setup"],
                "src": r["source"],
                "m": r["energy_method"],
                "acc": _fmt_range(
                    r["accuracy_retained_pct"],
                    r["accuracy_retained_pct_ci_low"],
                    r["accuracy_retained_pct_ci_high"],
                ),
                "shape": r["shape"] or "none shared",
                "p": fmt(r["params_pct"], 3) + same,
                "size": fmt(r["size_pct"], 3) + same,
                "tps": _fmt_range(
                    r["tokens_per_s_pct"],
                    r["tokens_per_s_pct_ci_low"],
                    r["tokens_per_s_pct_ci_high"],
                ),
                "epq": _fmt_range(
                    r["energy_per_query_pct"],
                    r["energy_per_query_pct_ci_low"],
                    r["energy_per_query_pct_ci_high"],
                )
                + same,
                "make": _fmt_range(
                    r["technique_j"], r["technique_j_ci_low"], r["technique_j_ci_high"]
                ),
                "be": break_even_text(r),
            }
        )
    cols = [
        ("t", "technique"),
        ("setup", "setup"),
        ("src", "against"),
        ("m", "energy"),
        ("shape", "shape"),
        ("acc", "accuracy retained (%)"),
        ("p", "params (%)"),
        ("size", "size (%)"),
        ("tps", "tokens/s (%)"),
        ("epq", "J/query (%)"),
        ("make", "J to make"),
        ("be", "break-even queries"),
    ]
    parts = [
        "## Techniques\n",
        "Each derived setup against its source: a quantised or pruned variant against the plain "
        "variant of its model, a distilled student against its teacher, a fine-tune against the "
        "model it started from. Percentages are of the source's figure; accuracy over the tasks "
        "both were measured on. *J to make*: the technique's own making (the variant made on "
        "load; the distillation or fine-tuning case), with the teacher's training not counted. "
        "Throughput and J/query are of both setups at one *shape*, the largest batch size (or "
        "concurrency, served) both measured; where they share none, no figure is given. "
        "Break-even: *J to make* ÷ the energy per query saved, only where a saving is measured "
        "(the 95% interval of the J/query difference leaves out zero; else *no saving "
        "measured*); *never*: it costs more per query; *same work*: magnitude pruning (zeros "
        "kept in dense tensors) or a fine-tune against its source does the same work per query, "
        "so no saving is counted; *unknown*: an input is missing. "
        "Brackets: 95% intervals (ratios: the conservative low÷high, high÷low). "
        "Size: bytes of the weights as held (magnitude pruning keeps its zeros; int4 on a CPU "
        "holds one value per byte, see docs/methodology.md). All columns: `techniques.csv`.\n",
        table(rows, cols, len(rows)),
    ]
    notes = [r for r in tech.to_dict("records") if r.get("note")]
    if notes:
        parts.append("\n".join(f"- **{r['setup']}**: {r['note']}." for r in notes) + "\n")
    if comparisons:
        lines = ["\n**Made another way** (accuracy points, 95% interval of the difference):\n"]
        for c in comparisons:
            lines.append(
                f"- {c.setup} ({c.what}) against {c.other} (trained from scratch): "
                f"{c.difference:+.3f} ({c.low:+.3f} to {c.high:+.3f}) on {c.tasks}: "
                f"{c.verdict}. Made with {fmt(c.produce_j)} J against {fmt(c.other_produce_j)} J."
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def making_section(produced: pd.DataFrame, queries: int) -> str:
    from harness.report.markdown import fmt, table

    s = produced.reset_index()
    s = s[s["produce_j"].notna()]
    if s.empty:
        return ""
    rows = [
        {
            "setup": f"{r['model']}/{r['variant']}/{r['hardware']}",
            "m": r["energy_method"],
            "make": _fmt_range(r["produce_j"], r["produce_j_ci_low"], r["produce_j_ci_high"], 4),
            "from": r["produced_from"],
            "up": fmt(r["upstream_produce_j"]),
            "upfrom": r["upstream_from"],
            "shape": r["shape"] or "",
            "life": fmt(r["energy_lifetime_produced_kwh"]),
            "co2": fmt(r["co2e_lifetime_produced_g"]),
        }
        for r in s.to_dict("records")
    ]
    cols = [
        ("setup", "model/variant/hardware"),
        ("m", "energy"),
        ("make", "produce_j (J)"),
        ("from", "made by"),
        ("up", "teacher/source J (apart)"),
        ("upfrom", "teacher/source made by"),
        ("shape", "queries at"),
        ("life", f"kWh: produce_j + {queries:,} queries"),
        ("co2", "gCO2e lifetime"),
    ]
    intro = (
        "The energy that made each setup (`produce_j`): the case that made its model, plus the "
        "making of a quantised or pruned variant on load. A teacher's or source model's own "
        "training is shown apart, not added. Lifetime = produce_j + the queries at each setup's "
        "headline shape (*queries at*: rows at different shapes do not compare; the answer and "
        "Techniques set two setups side by side at a shape both measured).\n\n"
    )
    return "## What each setup cost to make\n\n" + intro + table(rows, cols, len(rows))


def forecast_section(forecasts: pd.DataFrame) -> str:
    from harness.report.markdown import fmt, table

    if forecasts.empty:
        return ""
    rows = [
        {
            "case": r["case"],
            "m": r["energy_method"],
            "after": f"{fmt(r['forecast_after_steps'])} of {fmt(r['steps'])}",
            "f": _fmt_range(r["forecast_j"], r["forecast_j_ci_low"], r["forecast_j_ci_high"], 4),
            "a": fmt(r["energy_j"]),
            "err": fmt(r["forecast_error_pct"], 2),
            "in": "yes" if r["actual_inside_interval"] else "no",
            "fs": _fmt_range(r["forecast_s"], r["forecast_s_ci_low"], r["forecast_s_ci_high"], 4),
            "as": fmt(r["duration_s"]),
        }
        for r in forecasts.to_dict("records")
    ]
    cols = [
        ("case", "case"),
        ("m", "energy"),
        ("after", "after steps"),
        ("f", "forecast J (95%)"),
        ("a", "actual J"),
        ("err", "error (%)"),
        ("in", "inside"),
        ("fs", "forecast s (95%)"),
        ("as", "actual s"),
    ]
    inside = int(forecasts["actual_inside_interval"].sum())
    intro = (
        "Each training case forecast its total after its first steps (suite "
        "`measurement.forecast_fraction`, default 10%): the energy so far plus the remaining steps "
        "at the mean rate of its measured blocks. "
        f"Actual inside the 95% interval: {inside} of {len(forecasts)}.\n\n"
    )
    return "## Training forecasts\n\n" + intro + table(rows, cols, len(rows))


# --- the figure -------------------------------------------------------------------------------


def figure(tech: pd.DataFrame, path: Path) -> Path | None:
    """Accuracy retained against energy per query saved, each point labelled by its technique."""
    t = tech[tech["accuracy_retained_pct"].notna() & tech["energy_per_query_saved_pct"].notna()]
    if t.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from harness.report.png import save_png

    fig, ax = plt.subplots(figsize=(9, 6))
    kinds = list(dict.fromkeys(t["technique"]))
    cmap = plt.get_cmap("tab10")
    for i, kind in enumerate(kinds):
        g = t[t["technique"] == kind]
        x = g["energy_per_query_saved_pct"].to_numpy(float)
        y = g["accuracy_retained_pct"].to_numpy(float)
        # saved = 100 - J/query %, so the low end of saved is the high end of J/query
        xerr = np.array(
            [
                x - (100 - g["energy_per_query_pct_ci_high"]),
                (100 - g["energy_per_query_pct_ci_low"]) - x,
            ]
        )
        yerr = np.array(
            [y - g["accuracy_retained_pct_ci_low"], g["accuracy_retained_pct_ci_high"] - y]
        )
        xerr = np.where(np.isfinite(xerr), np.clip(xerr, 0, None), 0)
        yerr = np.where(np.isfinite(yerr), np.clip(yerr, 0, None), 0)
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=cmap(i % 10), label=kind, capsize=3)
        for k, (xi, yi, name) in enumerate(zip(x, y, g["setup"], strict=True)):
            # model/variant names the point; alternate above and below so neighbours stay legible
            offset = (6, 6) if (i + k) % 2 == 0 else (6, -11)
            short = name.rsplit("/", 1)[0]
            ax.annotate(short, (xi, yi), textcoords="offset points", xytext=offset, fontsize=7)
    ax.axhline(100, color="grey", lw=0.8, ls="--")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("energy per query saved against the source (%)")
    ax.set_ylabel("accuracy retained (% of the source's)")
    ax.grid(alpha=0.3)
    ax.legend(title="technique", fontsize=8)
    methods = sorted(set(t["energy_method"]))
    ax.set_title(
        "Accuracy retained against energy per query saved, at a shape both measured "
        "(95% intervals)\n"
        f"energy: {', '.join(methods)}",
        fontsize=11,
    )
    return save_png(fig, path)


FIGURE = Figure(
    "techniques.png",
    lambda analysis, path: figure(analysis.making.techniques, path),
    "Accuracy retained against energy per query saved, by technique.",
)


# --- all of it, for build_report --------------------------------------------------------------


@dataclass
class Making:
    """What build_report writes about making: computed once."""

    produced: pd.DataFrame
    techniques: pd.DataFrame
    comparisons: list[Comparison]
    forecasts: pd.DataFrame
    sentence: str | None


def build(tables: Tables) -> Making:
    produced = add_produce(tables)
    report_block = tables.run.suite.get("report") or {}
    tolerance = report_block.get("accuracy_tolerance", DEFAULT_TOLERANCE)
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError):
        tolerance = DEFAULT_TOLERANCE
    return Making(
        produced=produced,
        techniques=techniques_table(tables, produced),
        comparisons=scratch_comparisons(tables, produced),
        forecasts=forecast_table(makers_of(tables)),
        sentence=answer(tables, produced, tolerance),
    )


def summary_with_produce(tables: Tables, making: Making) -> pd.DataFrame:
    """summary.csv with the making columns (produce_j, produced_from, ...) after the others."""
    extra = making.produced[["shape", *PRODUCE_COLUMNS]].reset_index()
    return tables.summary.merge(extra, on=SETUP, how="left")
