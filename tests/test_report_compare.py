"""`harness compare`: a planted regression is flagged, changes inside the noise are not."""

from __future__ import annotations

import shutil

import pytest
from fakeruns import FakeCase, infer_case, write_run

from harness.cli import main
from harness.report.compare import compare_frames
from harness.report.load import open_run


def _cases(a=1.0, b=1.0, c=1.0, d=1.0, fail_d=False):
    """a, b, d: 3 repetitions ±2% (95% CI about ±5%); c: ±20% (CI about ±50%)."""
    cases = [
        infer_case("a", "fp32", "cpu", 8, a, rel_noise=0.02, trace=False),
        infer_case("b", "fp32", "cpu", 8, b, rel_noise=0.02, trace=False),
        infer_case("c", "fp32", "cpu", 8, c, rel_noise=0.20, trace=False),
        infer_case("d", "fp32", "cpu", 8, d, rel_noise=0.02, trace=False),
    ]
    if fail_d:
        cases[3] = FakeCase(cases[3].case, "infer", cases[3].reps[:1], status="failed", error="OOM")
    return cases


def _verdicts(rows, metric="energy_per_query_j"):
    r = rows[rows["metric"] == metric]
    return dict(zip(r["case"].str.split("/").str[0], r["verdict"], strict=True))


@pytest.fixture
def runs(tmp_path):
    base = write_run(tmp_path, _cases(), suite="s", started="2025-01-01T00:00:00Z")
    # a +30% (beyond noise), b +3% (under the threshold), c +10% (inside c's wide interval),
    # d -30% (an improvement)
    new = write_run(
        tmp_path, _cases(a=1.3, b=1.03, c=1.1, d=0.7), suite="s", started="2025-01-02T00:00:00Z"
    )
    return base, new


def test_planted_regression_is_flagged_noise_is_not(runs):
    base, new = runs
    rows = compare_frames(open_run(base).frame, open_run(new).frame, 0.05)
    v = _verdicts(rows)
    assert v == {"a": "regression", "b": "within noise", "c": "within noise", "d": "improvement"}
    a = rows[(rows["metric"] == "energy_per_query_j") & rows["case"].str.startswith("a/")].iloc[0]
    assert a["change_rel"] == pytest.approx(0.3)
    assert a["new_ci_low"] > a["base_ci_high"]
    # c moved by more than the threshold, but its intervals overlap
    c = rows[(rows["metric"] == "energy_per_query_j") & rows["case"].str.startswith("c/")].iloc[0]
    assert abs(c["change_rel"]) > 0.05 and not c["beyond_noise"]
    # durations did not change: nothing flagged there
    assert set(_verdicts(rows, "duration_s").values()) == {"within noise"}


def test_threshold_decides_when_intervals_do_not_overlap(runs):
    base, new = runs
    rows = compare_frames(open_run(base).frame, open_run(new).frame, 0.5)
    assert _verdicts(rows)["a"] == "within noise"  # +30% < 50%


def test_cli_exit_status(runs, tmp_path, capsys):
    base, new = runs
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "+30.0%" in out
    assert main(["compare", str(base), str(base)]) == 0
    # only improvements and changes inside the noise: exit 0
    calm = write_run(tmp_path / "calm", _cases(b=1.03, c=1.1, d=0.7), suite="s")
    assert main(["compare", str(base), str(calm)]) == 0


def test_a_case_that_now_fails_is_a_regression(runs, tmp_path):
    base, _ = runs
    broken = write_run(tmp_path / "broken", _cases(fail_d=True), suite="s")
    rows = compare_frames(open_run(base).frame, open_run(broken).frame)
    status = rows[rows["metric"] == "status"]
    assert status["case"].str.startswith("d/").all() and (status["verdict"] == "regression").all()
    assert main(["compare", str(base), str(broken)]) == 1


def test_energy_is_not_judged_across_methods(tmp_path):
    base = write_run(tmp_path, [infer_case("a", "fp32", "cpu", 8, 1.0, trace=False)], suite="s")
    est = write_run(
        tmp_path / "est",
        [infer_case("a", "fp32", "cpu", 8, 2.0, trace=False, method="estimated")],
        suite="s",
    )
    rows = compare_frames(open_run(base).frame, open_run(est).frame)
    energy = rows[rows["metric"] == "energy_per_query_j"].iloc[0]
    assert energy["verdict"] == "not comparable" and "estimated" in energy["note"]


def test_baseline_latest_picks_the_previous_run_of_the_same_suite(tmp_path, capsys):
    results = tmp_path / "results"
    first = write_run(results, _cases(a=5.0), suite="s", started="2025-01-01T00:00:00Z")
    second = write_run(results, _cases(), suite="s", started="2025-01-02T00:00:00Z")
    # another suite, later, and a later run of the same suite: neither is the baseline of third
    write_run(results, _cases(a=9.0), suite="other", started="2025-01-02T12:00:00Z")
    third = write_run(results, _cases(a=1.3), suite="s", started="2025-01-03T00:00:00Z")
    write_run(results, _cases(a=0.1), suite="s", started="2025-01-04T00:00:00Z")
    assert main(["compare", "--baseline", "latest", str(third)]) == 1  # 1.0 -> 1.3: regression
    out = capsys.readouterr().out
    assert f"base: {second.name}" in out and f"new:  {third.name}" in out
    assert main(["compare", "--baseline", "latest", str(second)]) == 0  # 5.0 -> 1.0
    assert f"base: {first.name}" in capsys.readouterr().out
    assert main(["compare", "--baseline", "latest", str(first)]) == 2  # nothing earlier


def test_baseline_latest_falls_back_to_harness_results(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    old = write_run(results, _cases(), suite="s", started="2025-01-01T00:00:00Z")
    new = write_run(tmp_path / "elsewhere", _cases(), suite="s", started="2025-01-02T00:00:00Z")
    monkeypatch.setenv("HARNESS_RESULTS", str(results))
    assert main(["compare", "--baseline", "latest", str(new)]) == 0
    assert f"base: {old.name}" in capsys.readouterr().out
    shutil.rmtree(old)
    assert main(["compare", "--baseline", "latest", str(new)]) == 2


def test_compare_usage_errors(runs, capsys):
    base, new = runs
    assert main(["compare", str(base)]) == 2
    assert main(["compare", "--baseline", "latest", str(base), str(new)]) == 2
    assert main(["compare", str(base), str(new), "--threshold", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3


# --------------------------------------------------------------------- tests, not overlap
def _energies(center: float, sd: float, n: int) -> list[float]:
    """n values with mean ``center`` and sample standard deviation exactly ``sd``."""
    import numpy as np

    z = np.linspace(-1, 1, n)
    z = z / z.std(ddof=1)
    return list(center + sd * z)


def test_welch_flags_a_real_change_whose_intervals_overlap(tmp_path):
    base = write_run(
        tmp_path, [infer_case("a", "fp32", "cpu", 8, _energies(10, 1, 10), trace=False)], suite="s"
    )
    new = write_run(
        tmp_path / "n",
        [infer_case("a", "fp32", "cpu", 8, _energies(11, 1, 10), trace=False)],
        suite="s",
    )
    rows = compare_frames(open_run(base).frame, open_run(new).frame, 0.05)
    row = rows[rows["metric"] == "energy_per_query_j"].iloc[0]
    assert row["new_ci_low"] < row["base_ci_high"]  # the 95% intervals overlap...
    assert row["p_value"] == pytest.approx(0.038, abs=0.005)  # ...yet Welch's test says real
    assert row["verdict"] == "regression"


def test_welch_p_value_matches_scipy_where_installed():
    scipy_stats = pytest.importorskip("scipy.stats")
    from harness.report.compare import welch_p

    a, b = [1.0, 1.2, 0.9, 1.1, 1.05], [1.3, 1.25, 1.4, 1.2]
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    # df rounded down: the p-value is at least scipy's, never smaller
    assert expected <= welch_p(a, b) <= expected * 1.5


def _with(case: FakeCase, **columns) -> FakeCase:
    for rep in case.reps:
        rep.update(columns)
    return case


def test_a_lost_sensor_or_another_device_is_not_comparable(tmp_path):
    base = write_run(
        tmp_path,
        [
            _with(infer_case("a", "fp32", "cpu", 8, 2.0, trace=False), energy_sources="rapl+nvml"),
            infer_case("b", "fp32", "cpu", 8, 1.0, trace=False),
        ],
        suite="s",
    )
    new = write_run(
        tmp_path / "n",
        [
            # the GPU sensor was lost: less energy counted, which is no improvement
            _with(infer_case("a", "fp32", "cpu", 8, 1.0, trace=False), energy_sources="rapl"),
            _with(infer_case("b", "fp32", "cpu", 8, 1.0, trace=False), device_name="Other CPU"),
        ],
        suite="s",
    )
    rows = compare_frames(open_run(base).frame, open_run(new).frame)
    a = rows[rows["case"].str.startswith("a/") & (rows["metric"] == "energy_per_query_j")].iloc[0]
    assert a["verdict"] == "not comparable" and "rapl+nvml -> rapl" in a["note"]
    b = rows[rows["case"].str.startswith("b/")]
    assert set(b["verdict"]) == {"not comparable"} and "Other CPU" in b["note"].iloc[0]
    assert "improvement" not in set(rows["verdict"])


def test_cases_missing_from_the_new_run_are_listed(runs, tmp_path, capsys):
    base, _ = runs
    fewer = write_run(tmp_path / "fewer", _cases()[:2], suite="s")
    rows = compare_frames(open_run(base).frame, open_run(fewer).frame)
    missing = rows[rows["verdict"] == "missing"]
    assert sorted(missing["case"].str[0]) == ["c", "d"]
    assert main(["compare", str(base), str(fewer)]) == 0
    assert "2 cases missing from the new run" in capsys.readouterr().out


def test_a_nan_threshold_is_refused(runs, capsys):
    base, new = runs
    for bad in ("nan", "inf"):
        assert main(["compare", str(base), str(new), "--threshold", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--threshold" in line for line in err)
    with pytest.raises(ValueError):
        compare_frames(open_run(base).frame, open_run(new).frame, float("nan"))
