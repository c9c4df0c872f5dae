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
