"""Statistics over repetitions, on data whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness.report.stats import aggregate, describe, t975, wilson
from harness.report.tables import case_stats, train_table


def test_t_quantiles_known_values():
    # textbook values of t(0.975, df)
    assert t975([1, 2, 4, 9, 30]) == pytest.approx(
        [12.7062, 4.3027, 2.7764, 2.2622, 2.0423], abs=1e-4
    )
    assert t975(60) == pytest.approx(2.000298, abs=1e-5)
    assert t975(120) == pytest.approx(1.979930, abs=1e-5)
    assert t975(10_000) == pytest.approx(1.96, abs=3e-3)  # tends to the normal quantile
    assert math.isnan(t975(0)) and math.isnan(t975(float("nan")))
    # one call maps every group's df, in place
    assert t975(np.array([[2, 1], [2, 0]])).shape == (2, 2)


def test_t_quantiles_agree_with_scipy_where_installed():
    stats = pytest.importorskip("scipy.stats")
    df = np.arange(1, 400)
    assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-6)


def test_describe_known_sample():
    d = describe([1, 2, 3, 4, 5])
    # mean 3, s = sqrt(2.5); half-width = t(0.975, 4) * s / sqrt(5)
    half = 2.776445105 * math.sqrt(2.5) / math.sqrt(5)
    assert d["median"] == 3 and d["mean"] == 3 and d["n"] == 5
    assert d["ci_low"] == pytest.approx(3 - half) and d["ci_high"] == pytest.approx(3 + half)
    assert d["cv"] == pytest.approx(math.sqrt(2.5) / 3)
    one = describe([7.0])
    assert one["median"] == 7 and math.isnan(one["ci_low"]) and math.isnan(one["cv"])
    assert describe([])["n"] == 0


def test_median_is_robust_where_the_mean_interval_widens():
    d = describe([10, 10, 10, 10, 100])
    assert d["median"] == 10
    assert d["ci_high"] > 50  # the outlier widens the interval on the mean


def test_aggregate_is_describe_per_group():
    frame = pd.DataFrame(
        {"k": ["a"] * 5 + ["b"] * 3, "x": [1, 2, 3, 4, 5, 10, 12, 14], "accuracy": np.nan}
    )
    out = aggregate(frame, ["k"], ["x"])
    for key, values in (("a", [1, 2, 3, 4, 5]), ("b", [10, 12, 14])):
        d = describe(values)
        row = out.loc[key]
        assert row["x"] == d["median"] and row["n"] == d["n"]
        assert row["x_ci_low"] == pytest.approx(d["ci_low"])
        assert row["x_ci_high"] == pytest.approx(d["ci_high"])
        assert row["x_cv"] == pytest.approx(d["cv"])


def test_lower_bounds_clip_at_zero_except_signed_metrics():
    frame = pd.DataFrame(
        {"k": ["a"] * 3, "energy_j": [1.0, 1.0, 10.0], "energy_dynamic_j": [1.0, 1.0, 10.0]}
    )
    row = aggregate(frame, ["k"], ["energy_j", "energy_dynamic_j"]).loc["a"]
    assert row["energy_j_ci_low"] == 0
    signed_low = describe([1, 1, 10])["ci_low"]
    assert signed_low < 0 and row["energy_dynamic_j_ci_low"] == pytest.approx(signed_low)


def test_accuracy_interval_is_wilsons_and_stays_inside_0_1():
    # 19 of 20 right: Wald's 0.95 ± 1.96·0.05 passes 1; Wilson's is (0.764, 0.991)
    frame = pd.DataFrame(
        {"k": ["a"], "accuracy": [0.95], "accuracy_stderr": [0.05], "samples": [20]}
    )
    row = aggregate(frame, ["k"], ["accuracy"]).loc["a"]
    assert row["accuracy_ci_low"] == pytest.approx(0.7639, abs=1e-3)
    assert row["accuracy_ci_high"] == pytest.approx(0.9911, abs=1e-3)
    # a perfect score is not certain: Wald's interval has zero width there
    perfect = pd.DataFrame(
        {"k": ["a"], "accuracy": [1.0], "accuracy_stderr": [0.0], "samples": [20]}
    )
    row = aggregate(perfect, ["k"], ["accuracy"]).loc["a"]
    assert row["accuracy_ci_high"] == 1.0 and row["accuracy_ci_low"] == pytest.approx(0.8389, 1e-3)
    # without a sample count, n comes from the standard error (se² = p(1-p)/(n-1))
    se = (0.8 * 0.2 / 99) ** 0.5
    no_n = pd.DataFrame({"k": ["a"], "accuracy": [0.8], "accuracy_stderr": [se]})
    low, high = wilson(0.8, 100)
    row = aggregate(no_n, ["k"], ["accuracy"]).loc["a"]
    assert row["accuracy_ci_low"] == pytest.approx(float(low)) and row[
        "accuracy_ci_high"
    ] == pytest.approx(float(high))
    # repeating a deterministic evaluation does not narrow the interval to nothing
    reps = pd.DataFrame({"k": ["a"] * 3, "accuracy": [0.8] * 3, "samples": [100] * 3})
    row = aggregate(reps, ["k"], ["accuracy"]).loc["a"]
    assert row["accuracy_ci_low"] == pytest.approx(float(low))


def _rows(case_id, method, energies, **extra):
    return [
        {
            "case_id": case_id,
            "case": case_id,
            "energy_method": method,
            "energy_j": e,
            "duration_s": 1.0,
            "status": "ok",
            **extra,
        }
        for e in energies
    ]


def test_measured_and_estimated_are_never_pooled():
    from harness.report.load import normalise

    frame = normalise(
        pd.DataFrame(_rows("c1", "measured", [10, 11, 12]) + _rows("c1", "estimated", [100, 200]))
    )
    cases = case_stats(frame).set_index("energy_method")
    assert cases.loc["measured", "energy_j"] == 11 and cases.loc["measured", "n"] == 3
    assert cases.loc["estimated", "energy_j"] == 150 and cases.loc["estimated", "n"] == 2


def test_failed_repetitions_are_left_out():
    from harness.report.load import normalise

    rows = _rows("c1", "measured", [10, 11, 12])
    rows[1]["status"] = "failed"
    rows[1]["energy_j"] = 1e9
    cases = case_stats(normalise(pd.DataFrame(rows)))
    assert cases["energy_j"].iloc[0] == 11 and cases["n"].iloc[0] == 2


def test_energy_to_train_is_the_sum_of_chunks_with_n_times_the_chunk_interval():
    from harness.report.load import normalise

    rows = _rows(
        "t",
        "measured",
        [10, 20, 30],
        workload="train",
        model="m",
        variant="v",
        hardware="h",
        steps=100,
    )
    cases = case_stats(normalise(pd.DataFrame(rows)))
    cases["co2e_g_total"] = np.nan  # added by add_carbon in a report; not under test here
    row = train_table(cases).iloc[0]
    half = 4.302652730 * 10 / math.sqrt(3)
    assert row["energy_to_train_j"] == 60 and row["train_steps"] == 300 and row["n_train"] == 3
    # 20 - half < 0: an energy cannot be negative, so the bound is clipped at 0
    assert 20 - half < 0 and row["energy_to_train_j_ci_low"] == 0
    assert row["energy_to_train_j_ci_high"] == pytest.approx(3 * (20 + half))
