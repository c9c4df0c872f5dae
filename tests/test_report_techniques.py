"""produce_j, the techniques table, the answer sentence and the forecasts in the report."""

from __future__ import annotations

import pandas as pd
import pytest
from fakeruns import accuracy_case, infer_case, train_case, write_run

from harness.report import build_report
from harness.report.load import open_run
from harness.report.tables import build_tables
from harness.report.techniques import build


def _making(case, workload: str, **extra):
    """A train-shaped fake case relabelled as another making workload, with its static columns."""
    case.workload = workload
    case.case = case.case.replace("/train-", f"/{workload}-")
    case.spec = {**case.spec, "type": workload}
    for r in case.reps:
        r.update(workload=workload, **extra)
    return case


def _variant(case, **extra):
    for r in case.reps:
        r.update(extra)
    return case


def _run(tmp_path):
    # teacher tiny-l: trained with 4 chunks of 100 J; student tiny-s from scratch (4 × 10 J) and
    # distilled from tiny-l (4 × 15 J); a fine-tune of tiny-s onto a task (2 × 5 J)
    teacher = train_case("tiny-l", "fp32", "cpu", [100.0] * 4, params=8e6)
    scratch = train_case("tiny-s", "fp32", "cpu", [10.0, 10.5, 9.5, 10.0], params=1e6)
    kd = _making(
        train_case("tiny-s-kd", "fp32", "cpu", [15.0] * 4, params=1e6), "distill", teacher="tiny-l"
    )
    for r in kd.reps:
        r["model_source"] = "builtin:tiny-s"
    for r in scratch.reps:
        r.update(forecast_j=41.0, forecast_j_ci_low=38.0, forecast_j_ci_high=44.0, forecast_s=40.0)
        r.update(forecast_s_ci_low=38.0, forecast_s_ci_high=42.0, forecast_after_steps=40)
    cases = [teacher, scratch, kd]
    cases += [
        infer_case("tiny-l", "fp32", "cpu", 8, 2.0, params=8e6),
        infer_case("tiny-s", "fp32", "cpu", 8, 0.5, params=1e6),
        infer_case("tiny-s-kd", "fp32", "cpu", 8, 0.5, params=1e6),
        # int8 of the teacher: made on load for 3 J each time, 1.2 J a query, a byte a weight
        _variant(
            infer_case("tiny-l", "int8w", "cpu", 8, 1.2, params=8e6, quantization="int8-weight"),
            produce_variant_j=3.0,
            model_size_mb=8.0,
        ),
        accuracy_case("tiny-l", "fp32", "cpu", "arith_mc", 0.80, params=8e6),
        accuracy_case("tiny-s", "fp32", "cpu", "arith_mc", 0.50, params=1e6),
        accuracy_case("tiny-s-kd", "fp32", "cpu", "arith_mc", 0.70, params=1e6),
        _variant(
            accuracy_case("tiny-l", "int8w", "cpu", "arith_mc", 0.78, params=8e6),
            quantization="int8-weight",
            produce_variant_j=3.0,
            model_size_mb=8.0,
        ),
    ]
    run = write_run(tmp_path, cases, report={"queries_lifetime": 1000, "accuracy_tolerance": 0.05})
    # rebuilt from the results, which carry every column (the fake parquet keeps only the known)
    (run / "measurements.parquet").unlink()
    (run / "measurements.csv").unlink()
    return run


def test_produce_j_sums_what_made_a_setup_and_nothing_else(tmp_path):
    tables = build_tables(open_run(_run(tmp_path)))
    p = build(tables).produced
    row = {k[:2]: r for k, r in p.iterrows()}
    assert row[("tiny-l", "fp32")]["produce_j"] == pytest.approx(400)
    assert row[("tiny-s", "fp32")]["produce_j"] == pytest.approx(40)
    # the distilled student: its distillation only; the teacher's training shown apart
    kd = row[("tiny-s-kd", "fp32")]
    assert kd["produce_j"] == pytest.approx(60)
    assert kd["upstream_produce_j"] == pytest.approx(400)
    assert (
        kd["produced_from"].startswith("distill tiny-s-kd/fp32/cpu/distill-")
        and "teacher tiny-l" in kd["produced_from"]
    )
    # a quantised variant: the model's training plus the quantisation on load, once
    q = row[("tiny-l", "int8w")]
    assert q["produce_j"] == pytest.approx(403)
    assert "int8-weight on load" in q["produced_from"]
    # the lifetime with the making: produce_j + queries × J/query
    assert kd["energy_lifetime_produced_j"] == pytest.approx(60 + 1000 * 0.5, rel=0.01)
    # the interval of a sum of chunks: n × that of the mean chunk (steady chunks: none)
    assert kd["produce_j_ci_low"] == pytest.approx(60) == kd["produce_j_ci_high"]
    s = row[("tiny-s", "fp32")]
    assert s["produce_j_ci_low"] < 40 < s["produce_j_ci_high"]


def test_techniques_table_sets_each_derived_setup_against_its_source(tmp_path):
    tables = build_tables(open_run(_run(tmp_path)))
    making = build(tables)
    t = making.techniques.set_index("setup")
    q = t.loc["tiny-l/int8w/cpu"]
    assert q["technique"] == "int8-weight" and q["source"] == "tiny-l/fp32/cpu"
    assert q["accuracy_retained_pct"] == pytest.approx(100 * 0.78 / 0.80)
    assert q["energy_per_query_pct"] == pytest.approx(60, rel=0.02)
    assert q["technique_j"] == pytest.approx(3.0)
    assert q["break_even_queries"] == pytest.approx(3.0 / 0.8, rel=0.03)
    d = t.loc["tiny-s-kd/fp32/cpu"]
    assert d["technique"] == "distill" and d["source"] == "tiny-l/fp32/cpu"
    assert d["params_pct"] == pytest.approx(12.5)
    assert d["technique_j"] == pytest.approx(60)
    assert d["break_even_queries"] == pytest.approx(60 / 1.5, rel=0.03)
    assert (
        d["accuracy_retained_pct_ci_low"]
        < d["accuracy_retained_pct"]
        < d["accuracy_retained_pct_ci_high"]
    )
    # the student distilled against the same size from scratch, with the interval of the gap
    (c,) = making.comparisons
    assert c.setup == "tiny-s-kd/fp32/cpu" and c.other == "tiny-s/fp32/cpu"
    assert c.difference == pytest.approx(0.20) and c.low > 0 and c.verdict == "it beats the other"


def test_report_has_the_answer_the_table_the_figure_and_the_forecasts(tmp_path):
    out = build_report(_run(tmp_path))
    text = (out / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("# Report")
    answer = next(line for line in lines[:4] if line.startswith("**Answer:**"))
    # within 0.05 of the best (0.80): tiny-l/int8w (0.78) is the smallest such setup
    assert answer.startswith(
        "**Answer:** the smallest setup within 0.05 of the best accuracy (0.800, tiny-l/fp32/cpu)"
        " is tiny-l/int8w/cpu (accuracy 0.780); against the full-size tiny-l/fp32/cpu"
    )
    # 2 J/query against 1.2 at batch 8, with the 95% interval of the saving (issue 24: the
    # sentence gave the point alone); making: 400 J of training against that plus 3 J on load
    assert "both at batch 8, it saves 40% energy per query (95% interval 34% to 46% saved)" in (
        answer
    )
    assert "saved) and costs 0.75% more to make" in answer
    saved_kwh = ((2.0 - 1.2) * 1000 - 3) / 3.6e6
    assert f"over 1,000 queries it saves {saved_kwh:.3g} kWh (95% interval" in answer
    assert "gCO2e" in answer
    assert "## Techniques" in text and "## What each setup cost to make" in text
    assert "## Training forecasts" in text and "Actual inside the 95% interval: 1 of 1" in text
    assert (out / "figures" / "techniques.png").stat().st_size > 1000
    assert "figures/techniques.png" in text
    summary = pd.read_csv(out / "summary.csv")
    assert {"produce_j", "produced_from", "upstream_produce_j"} <= set(summary.columns)
    tech = pd.read_csv(out / "techniques.csv")
    assert set(tech["technique"]) == {"int8-weight", "distill"}
    forecasts = pd.read_csv(out / "forecasts.csv")
    assert forecasts["forecast_error_pct"].iloc[0] == pytest.approx(100 * (41 - 40) / 40)


def test_a_magnitude_pruned_variant_that_seems_much_cheaper_is_flagged(tmp_path):
    cases = [
        train_case("tiny-l", "fp32", "cpu", [100.0] * 4, params=8e6),
        infer_case("tiny-l", "fp32", "cpu", 8, 2.0, params=8e6),
        _variant(
            infer_case("tiny-l", "p30", "cpu", 8, 1.0, params=8e6),
            prune=0.3,
            prune_method="magnitude",
            produce_variant_j=1.0,
        ),
        _variant(
            infer_case("tiny-l", "n30", "cpu", 8, 1.0, params=8e6),
            prune=0.3,
            prune_method="neurons",
            produce_variant_j=1.0,
        ),
    ]
    run = write_run(tmp_path, cases)
    (run / "measurements.parquet").unlink()
    (run / "measurements.csv").unlink()
    t = build(build_tables(open_run(run))).techniques.set_index("setup")
    assert "dense shapes" in t.loc["tiny-l/p30/cpu", "note"]
    assert t.loc["tiny-l/p30/cpu", "technique"] == "prune 0.3 magnitude"
    assert pd.isna(t.loc["tiny-l/n30/cpu", "note"])  # removing neurons does remove work


def test_the_answer_names_smaller_accurate_setups_it_has_no_energy_per_query_for(tmp_path):
    # a served q4_0 variant: scored, a quarter the size, but its energy is per request
    cases = [
        infer_case("tiny-s", "fp32", "cpu", 8, 0.5, params=1e6),
        accuracy_case("tiny-s", "fp32", "cpu", "arith_mc", 0.50, params=1e6),
        _variant(
            accuracy_case("tiny-s", "q4_0", "cpu", "arith_mc", 0.50, params=1e6),
            quantization="gguf-q4_0",
            model_size_mb=1.0,
        ),
    ]
    text = (build_report(write_run(tmp_path, cases), figures=False) / "report.md").read_text()
    answer = next(line for line in text.splitlines() if line.startswith("**Answer:**"))
    assert "no smaller setup of this run with an energy per query is accurate enough" in answer
    assert "tiny-s/q4_0/cpu is as accurate and smaller, but has no energy per query" in answer
    # without it, the plain sentence stands
    text = build_report(write_run(tmp_path / "b", cases[:2]), figures=False) / "report.md"
    answer = next(x for x in text.read_text().splitlines() if x.startswith("**Answer:**"))
    assert "no smaller setup of this run is accurate enough" in answer and "q4_0" not in answer
