"""The report's tables: per-case statistics, the summary per setup, carbon and the lifetime view.

A *setup* is model × variant × hardware × energy_method. The method is part of the key so that no
number mixes measured and estimated energy: a setup measured on one machine is normally one row.

``summary.csv`` is wide, one row per setup, because a reader compares setups side by side:

- training (``train`` cases): ``energy_to_train_j`` (the sum over the case's chunks of steps),
  ``train_duration_s``, ``train_steps``, ``train_tokens_in``, ``n_train`` (chunks);
- inference per shape, suffixed with the shape: ``energy_per_token_j_b8`` is the median energy per
  generated token at batch size 8. The suffix is ``b<batch>``, extended by ``_p<prompt>_n<new>``
  only when the run measured more than one prompt/new-token length. ``n_b8`` is the number of
  repetitions; peak memory is the maximum over the repetitions;
- accuracy per task: ``accuracy_<task>`` (joined across energy methods: accuracy does not depend
  on how energy was obtained);
- carbon and lifetime: see :func:`add_carbon` and :func:`add_lifetime`.

Every median has ``_ci_low`` / ``_ci_high`` beside it (see :mod:`harness.report.stats`).
``command`` cases have no model; they are listed in their own table (:func:`command_table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness import carbon
from harness.errors import HarnessError
from harness.records import J_PER_KWH
from harness.report.load import Run
from harness.report.stats import aggregate
from harness.workloads import kinds

SETUP = ["model", "variant", "hardware", "energy_method"]
SETUP_ID = ["model", "variant", "hardware"]
CASE_KEYS = ["case_id", "energy_method"]

CASE_IDENTITY = [
    "run_id",
    "suite",
    "case",
    "model",
    "model_source",
    "params",
    "model_size_mb",
    "variant",
    "dtype",
    "quantization",
    "hardware",
    "device",
    "device_name",
    "node",
    "workload",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "seq_len",
    "task",
    "metric",
    "energy_sources",
    "stop_reason",
]
CASE_METRICS = [
    "duration_s",
    "energy_j",
    "energy_dynamic_j",
    "avg_power_w",
    "energy_per_token_j",
    "energy_per_query_j",
    "wh_per_1000_queries",
    "tokens_per_s",
    "tokens_per_j",
    "ttft_s",
    "tpot_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "accuracy",
]
MEMORY = ["peak_rss_mb", "peak_vram_mb"]
#: inference figures of the summary, per shape, each with its interval
INFER_METRICS = [
    "energy_per_token_j",
    "energy_per_query_j",
    "wh_per_1000_queries",
    "co2e_g_per_1000_queries",
    "tokens_per_s",
    "ttft_s",
    "tpot_s",
]
SETUP_FACTS = [
    "run_id",
    "suite",
    "model_source",
    "params",
    "model_size_mb",
    "dtype",
    "quantization",
    "device",
    "device_name",
    "node",
    "energy_sources",
]


def with_ci(metrics: list[str]) -> list[str]:
    return [c for m in metrics for c in (m, f"{m}_ci_low", f"{m}_ci_high")]


CASE_SUMS = ["energy_sum_j", "duration_sum_s", "steps_sum", "tokens_in_sum"]
CASE_STATS_COLUMNS = [
    *CASE_KEYS,
    *CASE_IDENTITY,
    *[c for m in CASE_METRICS for c in (m, f"{m}_ci_low", f"{m}_ci_high", f"{m}_cv")],
    "n",
    *MEMORY,
    *CASE_SUMS,
]


def case_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per case and energy method: identity, then statistics over its ok repetitions.

    Adds ``energy_sum_j``, ``duration_sum_s``, ``steps_sum`` and ``tokens_in_sum`` (totals over the
    repetitions: for training, the whole run) and the maximum peak memory.
    """
    ok = frame[frame["status"] == "ok"].copy()
    ok["energy_method"] = ok["energy_method"].fillna("unknown")
    if ok.empty:
        return pd.DataFrame(columns=CASE_STATS_COLUMNS)
    grouped = ok.groupby(CASE_KEYS, sort=False, dropna=False)
    ident = grouped[CASE_IDENTITY].first()
    stats = aggregate(ok, CASE_KEYS, CASE_METRICS)
    memory = grouped[MEMORY].max()
    sums = grouped[["energy_j", "duration_s", "steps", "tokens_in"]].sum(min_count=1)
    sums.columns = CASE_SUMS
    out = pd.concat([ident, stats, memory, sums], axis=1).reset_index()
    return out[CASE_STATS_COLUMNS]


def failed_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """Cases with a failed repetition or status: case, workload, error (first seen)."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=["case_id", "case", "workload", "error"])
    return bad.groupby("case_id", sort=False)[["case", "workload", "error"]].first().reset_index()


# --- carbon -----------------------------------------------------------------------------------


@dataclass
class Grid:
    """The grid intensity and PUE used for a run's CO2e, and where they came from."""

    intensity_g_per_kwh: float = math.nan
    pue: float = math.nan
    source: str = "none"

    @property
    def known(self) -> bool:
        return not (math.isnan(self.intensity_g_per_kwh) or math.isnan(self.pue))

    def co2e_g(self, energy_j):
        """CO2e in grams of an energy in joules (the facility's PUE applied)."""
        return energy_j / J_PER_KWH * self.pue * self.intensity_g_per_kwh


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def grid_of(run: Run) -> Grid:
    """The grid intensity and PUE the run used: as recorded in its manifest when it ran, else as
    its records carry them; looked up again from the carbon block only for runs that recorded
    neither (codecarbon's data change between versions, a report must not).
    """
    recorded = run.manifest.get("carbon")
    if isinstance(recorded, dict) and _number(recorded.get("intensity_g_per_kwh")) is not None:
        pue = _number(recorded.get("pue"))
        origin = recorded.get("origin") or "given in the suite"
        return Grid(
            _number(recorded["intensity_g_per_kwh"]),
            pue if pue is not None else 1.0,
            f"{origin}, as recorded when the run was made",
        )
    # dropna first: pandas 2 takes an all-NaN column's median through numpy, which warns
    g = run.frame["intensity_g_per_kwh"].dropna().median()
    pue = run.frame["pue"].dropna().median()
    if pd.notna(g):
        return Grid(float(g), float(pue) if pd.notna(pue) else 1.0, "as recorded in the records")
    block = run.carbon_block
    if block:
        try:
            found = carbon.settings(block)
        except HarnessError:  # e.g. an intensity file gone since the run
            return Grid()
        return Grid(found["intensity_g_per_kwh"], found["pue"], f"{found['origin']}, looked up now")
    return Grid()


def add_carbon(cases: pd.DataFrame, grid: Grid) -> pd.DataFrame:
    """Adds ``co2e_g_per_1000_queries`` (with interval) to infer cases, ``co2e_g_total`` to all."""
    cases = cases.copy()
    for suffix in ("", "_ci_low", "_ci_high"):
        wh = cases.get(f"wh_per_1000_queries{suffix}")
        cases[f"co2e_g_per_1000_queries{suffix}"] = (
            grid.co2e_g(wh * 3600.0) if wh is not None else np.nan
        )
    cases["co2e_g_total"] = grid.co2e_g(cases["energy_sum_j"])
    return cases


# --- shapes -----------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return str(int(v)) if pd.notna(v) and float(v).is_integer() else str(v)


def shape_labels(cases: pd.DataFrame, dims: list[tuple[str, str]]) -> pd.Series:
    """A short label per row from the dimensions that vary (the first dimension always shows)."""
    shown = [
        (col, prefix)
        for i, (col, prefix) in enumerate(dims)
        if i == 0 or cases[col].nunique(dropna=False) > 1
    ]
    parts = [prefix + cases[col].map(_fmt) for col, prefix in shown]
    label = parts[0]
    for p in parts[1:]:
        label = label + "_" + p
    return label


def _suffixed(column: str, label: str) -> str:
    for tail in ("_ci_low", "_ci_high"):
        if column.endswith(tail):
            return f"{column[: -len(tail)]}_{label}{tail}"
    if column == "n":
        return f"n_{label}"
    return f"{column}_{label}"


def _wide(
    rows: pd.DataFrame, keys: list[str], label: pd.Series, values: list[str], order: list[str]
) -> pd.DataFrame:
    """Rows keyed by ``keys`` + label, unstacked so each label's values become suffixed columns."""
    rows = rows.assign(_label=label.to_numpy())
    rows = rows.drop_duplicates(keys + ["_label"], keep="last")
    labels = list(dict.fromkeys(rows.sort_values(order)["_label"]))
    wide = rows.set_index(keys + ["_label"])[values].unstack("_label")
    wide = wide.reindex(
        columns=pd.MultiIndex.from_tuples([(v, lab) for lab in labels for v in values])
    )
    wide.columns = [_suffixed(v, lab) for v, lab in wide.columns]
    return wide


# --- summary ----------------------------------------------------------------------------------


def _model_cases(cases: pd.DataFrame, workloads: tuple[str, ...]) -> pd.DataFrame:
    """The cases of a suite model whose workload is one of ``workloads`` (harness.workloads.kinds:
    chosen by what a workload is, never by its name)."""
    return cases[cases["workload"].isin(workloads) & cases["model"].notna()]


def from_scratch() -> tuple[str, ...]:
    """The workloads that train a model from scratch (not derived from another)."""
    return kinds(makes_model=True, derives=None)


def querying() -> tuple[str, ...]:
    """The in-process workloads whose unit is a query (infer)."""
    return kinds(unit="query", engines="in-process")


def train_table(cases: pd.DataFrame) -> pd.DataFrame:
    """Training per setup: totals over the case's chunks, with the interval n × that of one chunk."""
    train = _model_cases(cases, from_scratch()).copy()
    n = train["n"]
    train["energy_to_train_j"] = train["energy_sum_j"]
    train["energy_to_train_j_ci_low"] = n * train["energy_j_ci_low"]
    train["energy_to_train_j_ci_high"] = n * train["energy_j_ci_high"]
    train["train_duration_s"] = train["duration_sum_s"]
    train["train_duration_s_ci_low"] = n * train["duration_s_ci_low"]
    train["train_duration_s_ci_high"] = n * train["duration_s_ci_high"]
    train["train_steps"] = train["steps_sum"]
    train["train_tokens_in"] = train["tokens_in_sum"]
    train["co2e_g_per_training_run"] = train["co2e_g_total"]
    train["n_train"] = n
    return train


TRAIN_COLUMNS = [
    *with_ci(["energy_to_train_j", "train_duration_s"]),
    "train_steps",
    "train_tokens_in",
    "co2e_g_per_training_run",
    "n_train",
]


def _train_wide(train: pd.DataFrame) -> pd.DataFrame:
    if train.empty:
        return pd.DataFrame(columns=TRAIN_COLUMNS, index=pd.MultiIndex.from_tuples([], names=SETUP))
    if not train.duplicated(SETUP).any():
        return train.set_index(SETUP)[TRAIN_COLUMNS]
    # more than one training shape for a setup: suffix each with its shape
    label = shape_labels(train, [("train_steps", "s"), ("batch_size", "b"), ("seq_len", "l")])
    return _wide(train, SETUP, label, TRAIN_COLUMNS, ["train_steps", "batch_size", "seq_len"])


def infer_labels(infer: pd.DataFrame) -> pd.Series:
    return shape_labels(infer, [("batch_size", "b"), ("prompt_tokens", "p"), ("new_tokens", "n")])


INFER_COLUMNS = [*with_ci(INFER_METRICS), *MEMORY, "n"]


def headline(cases: pd.DataFrame) -> pd.DataFrame:
    """The headline inference shape of each setup: its largest batch size measured.

    Ties (several prompt/new-token lengths at that batch size) go to the most new tokens, then the
    longest prompt. The largest batch is what a deployment that serves many users tunes for, and
    the setup's best energy per query; the leaderboard shows the batch size beside the figures.
    """
    infer = _model_cases(cases, querying())
    order = ["batch_size", "new_tokens", "prompt_tokens"]
    top = infer.sort_values(order, ascending=False, kind="stable").drop_duplicates(SETUP)
    cols = [*SETUP, "case_id", "batch_size", "prompt_tokens", "new_tokens", *INFER_COLUMNS]
    return top[cols].set_index(SETUP)


def accuracy_wide(cases: pd.DataFrame) -> pd.DataFrame:
    """``accuracy_<task>`` with interval per model × variant × hardware (not per method)."""
    acc = _model_cases(cases, kinds(scores=True))
    acc = acc[acc["task"].notna()]
    if acc.empty:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=SETUP_ID))
    label = acc["task"].astype(str)
    values = ["accuracy", "accuracy_ci_low", "accuracy_ci_high"]
    return _wide(acc, SETUP_ID, label, values, ["task"])


def tasks_of(frame: pd.DataFrame) -> list[str]:
    """The accuracy tasks a table has columns for, in column order."""
    return [
        c[len("accuracy_") :]
        for c in frame.columns
        if c.startswith("accuracy_") and not c.endswith(("_ci_low", "_ci_high"))
    ]


def add_accuracy_mean(setups: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """``accuracy``: the mean over the setup's tasks, with the mean of the per-task bounds.

    The mean of the bounds is the interval of the mean when the tasks' errors move together: wider
    than the interval under independence, so never overstating certainty.
    """
    setups = setups.copy()
    if not tasks:
        for c in ("accuracy", "accuracy_ci_low", "accuracy_ci_high"):
            setups[c] = np.nan
        setups["accuracy_tasks"] = None
        return setups
    cols = [f"accuracy_{t}" for t in tasks]
    setups["accuracy"] = setups[cols].mean(axis=1)
    setups["accuracy_ci_low"] = setups[[f"{c}_ci_low" for c in cols]].mean(axis=1)
    setups["accuracy_ci_high"] = setups[[f"{c}_ci_high" for c in cols]].mean(axis=1)
    present = setups[cols].notna().to_numpy()
    setups["accuracy_tasks"] = [
        ";".join(t for t, p in zip(tasks, row, strict=True) if p) or None for row in present
    ]
    return setups


def add_lifetime(
    setups: pd.DataFrame, train: pd.DataFrame, queries: int, grid: Grid
) -> pd.DataFrame:
    """Training energy plus ``queries`` queries at the headline shape, and the break-even point.

    The training energy is the setup's own training case; a setup without one (a quantised or
    deployed copy of a model trained once in this run) borrows the model's training when the run
    trained that model exactly once (``train_setup`` names it). The lifetime figure is estimated
    when either part is. ``break_even_queries`` = energy_to_train_j / energy_per_query_j: the
    number of queries after which inference has used more energy than training.
    """
    setups = setups.copy()
    own = train.set_index(SETUP)
    by_model = train.drop_duplicates("model", keep=False).set_index("model")
    e_train, method, source = [], [], []
    for key in setups.index:
        model, variant, hardware, em = key
        if key in own.index:
            t = own.loc[key]
            t = t.iloc[0] if isinstance(t, pd.DataFrame) else t
            e_train.append(t["energy_to_train_j"])
            method.append(em)
            source.append(f"{model}/{variant}/{hardware}")
        elif model in by_model.index:
            t = by_model.loc[model]
            e_train.append(t["energy_to_train_j"])
            method.append("estimated" if "estimated" in (em, t["energy_method"]) else em)
            source.append(f"{model}/{t['variant']}/{t['hardware']}")
        else:
            e_train.append(np.nan)
            method.append(None)
            source.append(None)
    e_train = pd.Series(e_train, index=setups.index, dtype=float)
    e_query = setups["energy_per_query_j"]
    setups["train_setup"] = source
    setups["lifetime_train_energy_j"] = e_train
    setups["queries_lifetime"] = queries
    setups["energy_lifetime_j"] = e_train + queries * e_query
    setups["energy_lifetime_kwh"] = setups["energy_lifetime_j"] / J_PER_KWH
    setups["co2e_lifetime_g"] = grid.co2e_g(setups["energy_lifetime_j"])
    with np.errstate(divide="ignore", invalid="ignore"):
        setups["inference_share_lifetime"] = queries * e_query / setups["energy_lifetime_j"]
        setups["break_even_queries"] = e_train / e_query.where(e_query > 0)
    setups["lifetime_energy_method"] = [
        m if pd.notna(e) else None for m, e in zip(method, setups["energy_lifetime_j"], strict=True)
    ]
    return setups


HEADLINE_COLUMNS = {
    "batch_size": "headline_batch_size",
    "prompt_tokens": "headline_prompt_tokens",
    "new_tokens": "headline_new_tokens",
}


@dataclass
class Tables:
    """Everything the report writes, computed once."""

    run: Run
    grid: Grid
    cases: pd.DataFrame
    #: one row per setup (index SETUP): facts, training, inference per shape, accuracy, carbon,
    #: lifetime, and the headline shape's figures unsuffixed
    setups: pd.DataFrame
    summary: pd.DataFrame
    tasks: list[str]
    commands: pd.DataFrame
    failed: pd.DataFrame
    methods: list[str] = field(default_factory=list)
    #: embodied emissions and what they rest on (harness.carbon.boundary.Accounting)
    accounting: object = None
    #: harness check's verdict per case (harness.report.check.CaseVerdict)
    verdicts: list = field(default_factory=list)


SUMMARY_HEAD = [
    "model",
    "variant",
    "hardware",
    "energy_method",
    "params",
    "model_size_mb",
    "dtype",
    "quantization",
    "device_name",
    "energy_sources",
    "run_id",
]
CARBON_COLUMNS = ["intensity_g_per_kwh", "pue"]
LIFETIME_COLUMNS = [
    "headline_batch_size",
    "queries_lifetime",
    "train_setup",
    "lifetime_train_energy_j",
    "energy_lifetime_j",
    "energy_lifetime_kwh",
    "co2e_lifetime_g",
    "inference_share_lifetime",
    "break_even_queries",
    "lifetime_energy_method",
]


def setup_table(
    cases: pd.DataFrame, grid: Grid, queries: int
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The setups frame (index SETUP), the summary's column order and the accuracy tasks."""
    model_cases = _model_cases(cases, (*from_scratch(), *querying(), *kinds(scores=True)))
    facts = model_cases.groupby(SETUP, sort=False)[SETUP_FACTS].first()
    train = train_table(cases)
    train_w = _train_wide(train)
    infer = _model_cases(cases, querying())
    if infer.empty:
        infer_w = pd.DataFrame(index=facts.index)
    else:
        infer_w = _wide(
            infer,
            SETUP,
            infer_labels(infer),
            INFER_COLUMNS,
            ["batch_size", "prompt_tokens", "new_tokens"],
        )
    head = headline(cases)
    acc_w = accuracy_wide(cases)
    setups = facts.join(train_w).join(infer_w)
    if len(acc_w.columns):
        setups = setups.join(acc_w, on=SETUP_ID)
    tasks = tasks_of(acc_w)
    setups = add_accuracy_mean(setups, tasks)
    setups = setups.join(head.rename(columns=HEADLINE_COLUMNS))
    setups["intensity_g_per_kwh"] = grid.intensity_g_per_kwh
    setups["pue"] = grid.pue
    setups = add_lifetime(setups, train, queries, grid)
    setups = setups.sort_index(kind="stable")
    order = (
        [c for c in SUMMARY_HEAD if c not in SETUP]
        + [c for c in train_w.columns]
        + list(infer_w.columns)
        + [c for c in acc_w.columns]
        + CARBON_COLUMNS
        + LIFETIME_COLUMNS
    )
    return setups, order, tasks


def command_table(cases: pd.DataFrame) -> pd.DataFrame:
    """``command`` cases (and any case without a model): time and energy with intervals."""
    cmd = cases[cases["workload"].isin(kinds(own_program=True)) | cases["model"].isna()]
    cols = ["case", "hardware", "energy_method", *with_ci(["duration_s", "energy_j"]), "n"]
    return cmd[cols].reset_index(drop=True)


def build_tables(run: Run) -> Tables:
    from harness.carbon.boundary import account
    from harness.report.check import check_run, join_setup_checks

    accounting = account(run.manifest, run.frame, run.carbon_block)  # embodied_g, co2e_total_g
    grid = grid_of(run)
    verdicts = check_run(run, accounting, grid)  # check, check_rules on every row
    cases = add_carbon(case_stats(run.frame), grid)
    setups, order, tasks = setup_table(cases, grid, run.queries_lifetime)
    setups = join_setup_checks(setups, run.frame)
    summary = setups.reset_index()[[*SETUP, *order, "check", "check_rules"]]
    methods = sorted(m for m in cases["energy_method"].dropna().unique())
    return Tables(
        run=run,
        grid=grid,
        cases=cases,
        setups=setups,
        summary=summary,
        tasks=tasks,
        commands=command_table(cases),
        failed=failed_cases(run.frame),
        methods=methods,
        accounting=accounting,
        verdicts=verdicts,
    )
